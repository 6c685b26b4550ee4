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
