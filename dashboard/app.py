"""Entry point: ``streamlit run dashboard/app.py``.

Kept light on purpose: it imports no torch and loads no model, so that the first page
appears within seconds; models load lazily, on first use, and are cached for everyone.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

# One intra-op thread per torch call: concurrency comes from sessions, and on a small shared CPU
# two-thread kernels wait on each other's time slices (measured here: MobileNetV2 at batch 1 took
# 3.8 s with two threads on a busy 2-core machine, 16 ms with one). Set before torch is imported;
# a deployment with idle cores to spare can override it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(
    page_title="MedModels: explainable medical image classifiers", page_icon=":microscope:", layout="wide"
)
# Markdown tables wider than the page (the reproduction tables have up to 12 columns) scroll
# sideways inside their own box instead of being cut at the page's right edge.
st.html("<style>[data-testid='stMarkdownContainer'] table {display: block; overflow-x: auto;"
        " max-width: 100%;}</style>")

PAGES = [
    st.Page("views/home.py", title="Start", icon=":material/home:", default=True),
    st.Page("views/explore.py", title="Explore", icon=":material/image_search:"),
    st.Page("views/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/models.py", title="Models", icon=":material/model_training:"),
    st.Page("views/reproduction.py", title="Reproduction", icon=":material/table_chart:"),
]


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Import the model library in the background, once per process, while the start page shows."""

    def work() -> None:
        time.sleep(1.0)  # let the start page go out first
        import medmodels.explain  # noqa: F401  (torch, captum)
        from medmodels.zoo.registry import list_tasks

        list_tasks()

    thread = threading.Thread(target=work, name="medmodels-warm-up", daemon=True)
    thread.start()
    return thread


warming = warm_up()
page = st.navigation(PAGES)
if page.title != PAGES[0].title:
    warming.join()  # importing torch from two threads at once can deadlock: wait for the warm-up
with st.sidebar:
    st.caption(
        "Explainable classifiers from five papers: malaria, white blood cells, "
        "COVID-19 chest X-rays (knowledge distillation) and COVID-19 mortality risk."
    )
page.run()
