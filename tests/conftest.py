"""Shared pytest fixtures. Each helper keeps its own marked section."""
from __future__ import annotations

# --- lead: environment for every test (set before anything imports huggingface_hub) ---
import os as _lead_os

# The suite never touches the network: the Hub code path runs against a cache the tests build.
_lead_os.environ["HF_HUB_OFFLINE"] = "1"
_lead_os.environ["MEDMODELS_OFFLINE"] = "1"
_lead_os.environ.setdefault("OMP_NUM_THREADS", "2")

# --- data readers fixtures ---
import io as _readers_io
import zipfile as _readers_zipfile
from collections.abc import Callable as _ReadersCallable

import pytest
from PIL import Image as _ReadersImage


def _readers_image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (16, 16), color: object = (200, 30, 30), mode: str = "RGB",
    **save_kwargs: object,
) -> bytes:
    buffer = _readers_io.BytesIO()
    _ReadersImage.new(mode, size, color).save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def _readers_zip_bytes(members: dict[str, bytes], compression: int = _readers_zipfile.ZIP_DEFLATED) -> bytes:
    buffer = _readers_io.BytesIO()
    with _readers_zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def image_bytes() -> _ReadersCallable[..., bytes]:
    """Make a small solid-colour image file in memory: ``image_bytes("JPEG", (20, 10))``."""
    return _readers_image_bytes


@pytest.fixture
def zip_bytes() -> _ReadersCallable[..., bytes]:
    """Make a zip in memory from ``{member name: bytes}``."""
    return _readers_zip_bytes

# --- end data readers fixtures ---

# --- dashboard fixtures: untrained weights folders for AppTest pages and a live server ---
import contextlib as _dash_contextlib
from collections.abc import Iterable as _DashIterable
from collections.abc import Iterator as _DashIterator
from pathlib import Path as _DashPath


@_dash_contextlib.contextmanager
def _dash_untrained_weights(folder: _DashPath, models: _DashIterable[tuple[str, str]]) -> _DashIterator[_DashPath]:
    """A weights folder of untrained models, set as MEDMODELS_WEIGHTS_DIR with Streamlit's caches cleared."""
    import streamlit as st
    import torch

    from dashboard.sample_weights import write_untrained_folder

    torch.set_num_threads(1)
    for task, name in models:
        write_untrained_folder(folder, task, name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDMODELS_WEIGHTS_DIR", str(folder))
        st.cache_data.clear()
        st.cache_resource.clear()
        yield folder
    st.cache_data.clear()
    st.cache_resource.clear()


@_dash_contextlib.contextmanager
def _dash_live_server(tmp_path_factory: pytest.TempPathFactory, models: _DashIterable[tuple[str, str]],
                      extra: _DashIterable[tuple[_DashPath, str]] = ()) -> _DashIterator[str]:
    """A real ``streamlit run`` of the dashboard on 127.0.0.1 over untrained ``models``.

    ``extra``: (folder, "task/model") pairs copied into its weights folder as they are (shipped weights).
    """
    import shutil

    import torch

    from dashboard.devserver import start_dashboard, stop
    from dashboard.sample_weights import write_untrained_folder

    torch.set_num_threads(1)
    weights = tmp_path_factory.mktemp("weights")
    for task, name in models:
        write_untrained_folder(weights, task, name)
    for source, key in extra:
        shutil.copytree(source, weights / key)
    env = {**_lead_os.environ, "MEDMODELS_WEIGHTS_DIR": str(weights), "HF_HUB_OFFLINE": "1",
           "MEDMODELS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = (tmp_path_factory.mktemp("server") / "streamlit.log").open("w")
    try:
        proc, url, _ = start_dashboard(env, log)
    except RuntimeError as err:
        pytest.fail(f"{err}; see {log.name}")
    yield url
    stop(proc)
    log.close()


@pytest.fixture(scope="session")
def untrained_weights() -> object:
    """``with untrained_weights(folder, [(task, model), ...]) as folder:`` for AppTest page tests."""
    return _dash_untrained_weights


@pytest.fixture(scope="session")
def live_server() -> object:
    """``with live_server(tmp_path_factory, [(task, model), ...]) as url:`` for browser tests."""
    return _dash_live_server

# --- end dashboard fixtures ---


# --- explanation tests: one torch thread (Captum timings and determinism) ---
@pytest.fixture
def one_torch_thread() -> _DashIterator[None]:
    """Run the test on one torch thread and restore the count after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
