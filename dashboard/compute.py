"""The dashboard's caches of library results: predictions, explanations, evaluations, timings.

Each function calls one ``medmodels`` function and caches the object it returns as it is
(``ImageExplanation``, ``Evaluation``, ``SanityResult``), keyed on the content hash of the input
(``key``), the model and the settings; the pages only lay those objects out. Arguments starting
with ``_`` are not hashed by Streamlit (``key`` stands for them). ``st.cache_data`` pickles, so
every session gets its own copy; labelled sets are held per session or as shared resources.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import streamlit as st

from dashboard.common import release_memory, trained_model

log = logging.getLogger("dashboard")


@st.cache_data(show_spinner=False, max_entries=2048, ttl=3600)
def image_probabilities(task: str, name: str, key: str, _image: Any) -> np.ndarray:
    """Class probabilities [C] of one image by one model."""
    from medmodels.data.transforms import preprocess_batch
    from medmodels.explain import model_lock
    from medmodels.inference import predict_proba

    model, card = trained_model(task, name)
    batch = preprocess_batch([_image], card.entry.preprocess)
    with model_lock(model):
        return predict_proba(model, batch)[0]


@st.cache_data(show_spinner=False, max_entries=256, max_size="256MB", ttl=3600)
def explained(task: str, name: str, key: str, methods: tuple[str, ...], settings: Any,
              faithfulness_steps: int | None, _image: Any, _field: Any = None, _box: Any = None):  # noqa: ANN201
    """``medmodels.explain.image.explain_image``: the image's maps by one model for ``methods``,
    with their faithfulness (``faithfulness_steps``, None: not scored) and localisation scores
    (``_field``/``_box`` follow from the image, so ``key`` stands for them), and the model view."""
    from medmodels.explain.image import explain_image

    model, card = trained_model(task, name)
    return explain_image(model, card.entry, _image, methods, settings,
                         faithfulness_steps=faithfulness_steps, field=_field, box=_box)


@st.cache_data(show_spinner=False, max_entries=64, max_size="128MB", ttl=3600)
def sanity(task: str, name: str, key: str, method: str, settings: Any, layers: int, _image: Any):  # noqa: ANN201
    """Cascading model-randomisation check: rank correlation with the original map per layer."""
    from medmodels.data.transforms import preprocess_batch
    from medmodels.explain import randomisation_check

    model, card = trained_model(task, name)
    batch = preprocess_batch([_image], card.entry.preprocess)
    return randomisation_check(model, card.entry, batch, None, method, settings, layers=layers)


# --------------------------------------------------------------------------- labelled sets


UPLOAD_SLOT = "_labelled_upload"


def labelled_upload(
    key: str, classes: tuple[str, ...], name: str, _data: bytes, _csv: bytes | None, csv_key: str | None
):  # noqa: ANN201 - LabelledSet
    """A user's zip (and label CSV) read in memory, never extracted.

    Held in the session (one upload at a time), not in a process-wide cache: the images'
    bytes go when the user uploads another set or closes the page, so four users' large
    zips do not stay in the server after they leave. Evaluations are still cached by
    content hash (their results are a few numbers per image).
    """
    from medmodels.data.datasets import read_labelled_set

    slot = (key, classes, csv_key)
    held = st.session_state.get(UPLOAD_SLOT)
    if held is not None and held[0] == slot:
        return held[1]
    st.session_state.pop(UPLOAD_SLOT, None)  # free the previous set before reading the next
    release_memory()
    data = read_labelled_set(_data, classes, labels_csv=_csv, name=name)
    log.info("read a labelled upload: %d images, %d skipped", len(data.samples), len(data.skipped))
    st.session_state[UPLOAD_SLOT] = (slot, data)
    return data



@st.cache_resource(show_spinner=False, max_entries=8, ttl=3600)
def labelled_folder(path: str, classes: tuple[str, ...]):  # noqa: ANN201 - LabelledSet
    from pathlib import Path

    from medmodels.data.datasets import read_labelled_set

    return read_labelled_set(Path(path), classes)


@st.cache_resource(show_spinner=False, max_entries=8, ttl=3600)
def model_test_split(task: str, name: str):  # noqa: ANN201 - LabelledSet
    """The test split a shipped model was scored on (needs ../shared/data)."""
    from medmodels.evaluate import held_out_set

    return held_out_set(trained_model(task, name)[1])


@st.cache_data(show_spinner=False, max_entries=64, max_size="256MB", ttl=3600)
def evaluation(task: str, name: str, data_key: str, title: str, _data: Any):  # noqa: ANN201 - Evaluation
    """``medmodels.evaluate.Evaluation`` of one model on a labelled set (at threshold 0.5;
    ``Evaluation.at`` gives any other). Shows a progress bar while it runs; the bar is created
    in here because a cached function may only draw into blocks it created."""
    from medmodels.evaluate import evaluate_set
    from medmodels.explain import model_lock

    model, card = trained_model(task, name)
    bar = st.progress(0.0, text=f"Evaluating {title} on {len(_data.samples)} images…")

    def progress(done: int, n: int) -> None:
        bar.progress(done / max(n, 1), text=f"Evaluating {title}: {done} of {n} distinct images")

    with model_lock(model):
        result = evaluate_set(model, card.entry, _data, progress=progress)
    bar.empty()
    return result


@st.cache_data(show_spinner=False, max_entries=64, ttl=600)
def latency(task: str, name: str, repeats: int = 5) -> dict:
    """CPU milliseconds per image at batch 1, measured now on this machine."""
    from medmodels.explain import model_lock
    from medmodels.inference import time_inference

    model, card = trained_model(task, name)
    with model_lock(model):
        return time_inference(model, card.entry.preprocess, batch_sizes=(1,), repeats=repeats)
