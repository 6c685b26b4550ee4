"""Start page: what the dashboard is for and where to go. Imports no torch, so it appears at once."""

from __future__ import annotations

import streamlit as st

from dashboard.common import page_header

page_header(
    "Explainable medical image classifiers",
    "Small published models for malaria cells, white blood cells, COVID-19 chest X-rays and "
    "COVID-19 mortality risk, with their explanations, metrics and the papers' numbers side by side.",
)

CARDS = (
    (
        "views/explore.py",
        "Explore",
        ":material/image_search:",
        "**I have an image.** Upload one (or pick a bundled example), choose models, and see each "
        "prediction with Grad-CAM, Integrated Gradients, SmoothGrad, occlusion and more, plus how "
        "faithful each map is.",
    ),
    (
        "views/evaluate.py",
        "Evaluate",
        ":material/fact_check:",
        "**I have a labelled test set.** Upload a zip of class folders (or images with a CSV) and get "
        "every metric of the papers, ROC and PR curves, calibration, a live threshold, and the images "
        "each model gets wrong.",
    ),
    (
        "views/compare.py",
        "Compare",
        ":material/compare:",
        "**I teach.** Teacher vs distilled student, shallow CNN vs deep network: size, speed on this "
        "machine, metrics, where they disagree and how similar their Grad-CAMs are.",
    ),
    (
        "views/models.py",
        "Models",
        ":material/model_training:",
        "**What are these models?** Every model's card: architecture, training recipe, data split, "
        "metrics, limits.",
    ),
    (
        "views/reproduction.py",
        "Reproduction",
        ":material/table_chart:",
        "**How close to the papers?** The papers' tables next to ours, with the split behind every number.",
    ),
)

cols = st.columns(2)
for i, (path, title, icon, text) in enumerate(CARDS):
    with cols[i % 2].container(border=True):
        st.page_link(path, label=title, icon=icon)
        st.markdown(text)

st.caption(
    "Everything runs on this machine's CPU: models load the first time they are used and are then "
    "shared. **What happens to an upload:** while it is received, the web server keeps a file under "
    "1 MB in memory and writes a larger one to an unnamed temporary file that is deleted as soon as it "
    "has been read. From then on it is only in this server's memory: the file itself for your page, "
    "until 30 seconds after you close it or replace the upload; a reduced copy of each image (at most "
    "1024 pixels a side) and the results for up to an hour, so the same image is not decoded twice. "
    "Nothing is saved to disk, image metadata (EXIF) and DICOM patient fields are discarded, and the "
    "server log counts files without naming them."
)
