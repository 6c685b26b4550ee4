"""What every page shares: the notice, error display, task/model pickers, cached loading.

Models are shared between sessions through ``st.cache_resource`` and never mutated here;
predictions run under the library's per-model lock so that they never interleave with an
attribution call (whose hooks would see the other thread's forward pass). Everything a
page keeps between reruns lives in ``st.session_state``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

log = logging.getLogger("dashboard")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "examples"
IMAGE_TYPES = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "dcm", "dicom"]
NOTICE = (
    "**Research and education tool — not a medical device and not for diagnosis.** "
    "Predictions and explanations come from small models trained on public data sets."
)
FAMILY_WORDS = {
    "shallow": "shallow CNN",
    "deep": "deep baseline",
    "quadsnet": "QuadSNet",
    "teacher": "distillation teacher",
    "student": "distillation student",
    "clinical": "clinical model",
    "comparison": "comparison model",
}


# --------------------------------------------------------------------------- memory

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc mallopt() parameters
TRIM_EVERY_S = 30.0


def _bound_heap() -> None:
    """Make large buffers (decoded images, uploaded zips) come from mmap and go straight back
    to the system when freed: glibc otherwise raises its mmap threshold after the first big
    free and keeps later ones in the heap, so the server's memory never falls after uploads.
    Streamlit runs every page in its own thread, and glibc gives threads their own heaps
    (arenas) whose fragments are hard to return; two arenas are shared by all of them."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 8 << 20)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def release_memory() -> None:
    """Collect garbage and hand free heap pages back to the system (glibc keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reap_closed_sessions() -> int:
    """Shut down sessions whose page closed more than ``server.disconnectedSessionTTL`` ago.

    Streamlit keeps a closed page's session (its uploaded files, its session state) for
    reconnection and removes it once that time has passed, but only when the next page
    connects: with no new visitor, four users' 157 MB zips stayed in the server. This asks
    Streamlit's session store to drop expired sessions now. It uses Streamlit internals, so any
    change there just disables it (the sessions then go at the next connection, as before).
    Returns how many sessions were shut down.
    """
    try:
        from streamlit.runtime import Runtime

        manager = Runtime.instance()._session_mgr  # noqa: SLF001
        with manager._storage_lock:  # noqa: SLF001
            expired = manager._session_storage._cache.expire()  # noqa: SLF001
        for _session_id, info in expired:
            info.session.shutdown()
        return len(expired)
    except Exception:  # noqa: BLE001 - internals changed or no runtime (tests): nothing to reap
        return 0


@st.cache_resource(show_spinner=False)
def memory_janitor() -> threading.Thread:
    """One thread per server process that, every ``TRIM_EVERY_S`` seconds, shuts down sessions of
    pages closed long enough ago and releases freed memory, so what a closed session held (its
    uploads, its session state) leaves the process soon after."""

    def loop() -> None:
        while True:
            time.sleep(TRIM_EVERY_S)
            if reap_closed_sessions():
                log.info("freed the uploads of closed pages")
            release_memory()

    thread = threading.Thread(target=loop, name="memory-janitor", daemon=True)
    thread.start()
    return thread


_bound_heap()


# Every ASCII punctuation character may be backslash-escaped in (GitHub-flavoured) Markdown.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def as_text(value: object) -> str:
    """``value`` made inert for Streamlit's Markdown: the one way user text reaches the page.

    File and folder names, CSV headers and values, DICOM tags and error messages that embed
    them are all Markdown inside ``st.error``, ``st.caption`` and image captions, so
    ``![x](http://host/)`` would draw an image (and fetch it), ``[a](javascript:...)`` a link,
    ``:red[..]`` colour and ``$..$`` maths. Every ASCII punctuation character is escaped with a
    backslash (which also stops bare URLs becoming links), control characters are replaced,
    and raw HTML is never enabled. Dataframe cells and widget options are plain text already.
    """
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in str(value))
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def show_error(message: object) -> None:
    """An error message (which may embed user text) shown as text in a red box."""
    st.error(as_text(message))


def notice() -> None:
    """The disclaimer shown at the top of every page (which also starts the memory janitor)."""
    memory_janitor()
    st.warning(NOTICE, icon=":material/health_and_safety:")


def page_header(title: str, caption: str) -> None:
    """Every page starts with the notice, its title and one line on what it is for."""
    notice()
    st.title(title)
    st.caption(caption)


@contextmanager
def page_errors(what: str = "This step") -> Iterator[None]:
    """Show user-caused errors as their message and anything else as a short generic one.

    Streamlit's own control flow (``st.stop``, ``st.rerun``) derives from BaseException
    and passes through untouched.
    """
    from medmodels.errors import MedModelsError

    try:
        yield
    except MedModelsError as err:
        show_error(err)
    except Exception as err:  # noqa: BLE001 - the page must never show a traceback
        log.exception("%s failed", what)
        show_error(f"{what} failed unexpectedly ({type(err).__name__}); the details were logged on the server.")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- registry & weights


@st.cache_data(ttl=30, show_spinner=False)
def has_weights(task: str, name: str) -> tuple[bool, str]:
    """``medmodels.hub.weights_status``: (available, where or why not), cached briefly since
    training jobs may add weights while the dashboard runs."""
    from medmodels.hub import weights_status

    return weights_status(task, name)


@st.cache_resource(show_spinner="Loading model weights…", max_entries=24)
def trained_model(task: str, name: str):  # noqa: ANN201 - (nn.Module, TrainedCard)
    """The shipped model and its card, loaded once per process and shared (read-only)."""
    from medmodels.hub import load_trained

    log.info("loading model weights (one model)")
    return load_trained(task, name)


def task_picker(key: str, tasks: Sequence[str] | None = None, label: str = "Task"):  # noqa: ANN201
    """A select box of tasks (optionally limited to ``tasks``); returns the TaskSpec."""
    from medmodels.zoo.registry import list_tasks

    specs = [t for t in list_tasks() if tasks is None or t.name in tasks]
    if not specs:
        st.info("No task offers this view.")
        st.stop()
    names = [t.name for t in specs]
    titles = {t.name: t.title for t in specs}
    chosen = st.selectbox(label, names, format_func=titles.__getitem__, key=key)
    return specs[names.index(chosen)]


@dataclass(frozen=True)
class ModelChoice:
    """The registered models of a task split into those with weights and those without."""

    available: list  # ModelEntry
    missing: list  # (ModelEntry, reason)


def model_choice(task: str, families: Sequence[str] | None = None) -> ModelChoice:
    from medmodels.zoo.registry import list_models

    available, missing = [], []
    for entry in list_models(task):
        if families is not None and entry.family not in families:
            continue
        ok, reason = has_weights(task, entry.name)
        (available.append(entry) if ok else missing.append((entry, reason)))
    return ModelChoice(available, missing)


def show_missing(choice: ModelChoice) -> None:
    """List models without weights, disabled, each with the reason."""
    if not choice.missing:
        return
    with st.expander(f"{len(choice.missing)} registered model(s) not available (no trained weights)"):
        for entry, reason in choice.missing:
            st.markdown(f"- ~~{entry.title}~~ (`{entry.name}`): {reason}")


def model_picker(
    task: str,
    key: str,
    *,
    label: str = "Models",
    default_count: int = 1,
    families: Sequence[str] | None = None,
    multiple: bool = True,
) -> list:
    """Multiselect of the task's models that have weights; the others listed with the reason."""
    choice = model_choice(task, families)
    if not choice.available:
        st.info(f"No trained weights yet for any {task} model; the models are listed below.")
        show_missing(choice)
        return []
    names = [e.name for e in choice.available]
    titles = {e.name: f"{e.title} · {FAMILY_WORDS.get(e.family, e.family)}" for e in choice.available}
    if multiple:
        picked = st.multiselect(
            label, names, default=names[:default_count], format_func=titles.__getitem__, key=f"{key}_{task}"
        )
    else:
        one = st.selectbox(label, names, format_func=titles.__getitem__, key=f"{key}_{task}")
        picked = [one] if one else []
    show_missing(choice)
    return [e for e in choice.available if e.name in picked]


# --------------------------------------------------------------------------- images


@st.cache_data(show_spinner=False, max_entries=256, max_size="256MB", ttl=3600)
def decode_image(key: str, name: str, _data: bytes):  # noqa: ANN202 - PIL.Image
    """Decode once per content hash (``key``), reduced to ``WORK_SIDE`` (at most 3 MB each);
    ImageReadError says what is wrong."""
    from medmodels.data.images import WORK_SIDE, load_image

    return load_image(_data, name, max_side=WORK_SIDE)


SESSION_MAX_PIXELS = 400_000_000
"""Pixels of the images one Explore session holds at once (ten 6300 x 6300 uploads): bounds the
decoding work one browser tab can ask of the server."""


@dataclass(frozen=True)
class InputImage:
    """One decoded image the user gave or picked; ``key`` is its content hash."""

    name: str
    key: str
    image: object  # PIL.Image.Image
    label: str | None = None  # the class folder of a bundled example


def sample_input(sample, classes: Sequence[str]) -> InputImage:  # noqa: ANN001 - medmodels Sample
    """A labelled set's sample read, hashed and decoded (once per content hash) for the pages."""
    data = sample.source if isinstance(sample.source, bytes) else sample.source.read_bytes()
    key = digest(data)
    label = classes[sample.label] if sample.label is not None else None
    return InputImage(sample.name, key, decode_image(key, sample.name, data), label)


def example_files(task: str) -> list[tuple[str, Path]]:
    """(class, path) of the bundled example images of a task, class folders in task order."""
    from medmodels.data.datasets import IMAGE_SUFFIXES
    from medmodels.zoo.registry import get_task

    root = EXAMPLES_DIR / task
    out = []
    for cls in get_task(task).classes:
        folder = root / cls
        if folder.is_dir():
            out += [(cls, p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return out


def show_dicom_tags(name: str, data: bytes) -> None:
    """For a DICOM input, the technical tags that were read (never patient fields), so the user
    can check that the right image, view and intensity handling were used."""
    from medmodels.data.dicom import dicom_info, is_dicom

    if not is_dicom(data):
        return
    info = dicom_info(data, name)
    notes = " ".join(n[0].upper() + n[1:] for n in info.notes)
    frames = f" The file holds {info.frames} frames; only the first is used." if info.frames > 1 else ""
    st.caption(as_text(f"{name}: {info.summary()}{frames}{(' ' + notes) if notes else ''}"))


def show_dicom_table(samples: Sequence) -> None:
    """For a set with DICOM files: how many share each combination of the tags read."""
    from collections import Counter

    from medmodels.data.dicom import dicom_info, is_dicom
    from medmodels.errors import ImageReadError

    counts: Counter = Counter()
    for sample in samples:
        data = sample.source if isinstance(sample.source, bytes) else None
        if data is None and getattr(sample.source, "suffix", "").casefold() in (".dcm", ".dicom"):
            data = sample.source.read_bytes()
        if not data or not is_dicom(data):
            continue
        try:
            info = dicom_info(data)
        except ImageReadError:
            continue
        counts[(info.modality, info.photometric, info.bits_stored, info.bits_allocated, info.view_position,
                info.frames)] += 1
    if not counts:
        return
    import pandas as pd

    columns = ["modality", "photometric interpretation", "bits stored", "bits allocated", "view position",
               "frames"]
    table = pd.DataFrame([[*key, n] for key, n in counts.most_common()], columns=[*columns, "files"])
    with st.expander(f"DICOM tags read from {sum(counts.values())} file(s)"):
        st.caption("MONOCHROME1 images are inverted; of multi-frame files only the first frame is used.")
        st.dataframe(table, hide_index=True, width="stretch")


def read_inputs(uploads: Sequence, examples: Sequence[tuple[str, Path]]) -> list[InputImage]:
    """Decode uploads and picked examples; a bad file is reported in the page and left out."""
    from medmodels.data.images import image_size
    from medmodels.errors import ImageReadError

    items: list[tuple[str, bytes, str | None]] = [(u.name, u.getvalue(), None) for u in uploads]
    items += [(f"{cls}/{p.name}", p.read_bytes(), cls) for cls, p in examples]
    images = []
    pixels = 0
    for index, (name, data, label) in enumerate(items):
        size = image_size(data)
        pixels += size[0] * size[1] if size else 0
        if pixels > SESSION_MAX_PIXELS:
            show_error(
                f"{len(items) - index} of the {len(items)} images were not read: together the images hold "
                f"more than {SESSION_MAX_PIXELS / 1e6:,.0f} megapixels, the most one page reads at once. "
                "Remove some uploads (or downscale them) and try again."
            )
            break
        key = digest(data)
        try:
            images.append(InputImage(name, key, decode_image(key, name, data), label))
        except ImageReadError as err:
            show_error(err)
            continue
        show_dicom_tags(name, data)
    log.info("read %d image(s), %d left out", len(images), len(items) - len(images))
    return images
