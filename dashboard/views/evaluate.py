"""Evaluate: models on a labelled test set, with every metric of the papers and a drill-down."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, compute
from dashboard import evaluation_ui as ui
from dashboard.common import (
    as_text,
    model_picker,
    page_errors,
    page_header,
    sample_input,
    show_dicom_table,
    task_picker,
)
from dashboard.explain_ui import explanation_grid, localisation_section, settings_panel
from medmodels.csv_safety import frame_to_csv

page_header(
    "Evaluate",
    "Score models on a labelled test set: the papers' metrics, curves, calibration, and the "
    "images each model gets wrong.",
)

task = task_picker("evaluate_task")
entries = model_picker(task.name, "evaluate_models", label="Models", default_count=2)
source = st.radio(
    "Test set", list(ui.SOURCES), format_func=ui.SOURCES.__getitem__, key="evaluate_source", horizontal=True
)

sets: dict[str, ui.TestSet] = {}
with page_errors("Reading the test set"):
    sets = ui.test_sets(task, entries, source)
if not entries or not sets:
    st.stop()
first = next(iter(sets.values()))
st.caption(
    f"{as_text(first.label)}: {len(first.data)} labelled images"
    + (", one split per model" if source == "heldout" else "")
    + "."
)
ui.show_skipped(first.data)
show_dicom_table(first.data.samples)

results = {}
with page_errors("Evaluation"):
    for e in entries:
        if e.name in sets:
            results[e.name] = compute.evaluation(task.name, e.name, sets[e.name].key, e.title, sets[e.name].data)
if not results:
    st.stop()

titles = {e.name: e.title for e in entries}
binary = task.positive_index is not None
threshold = 0.5
if binary:
    threshold = st.slider(
        f"Decision threshold on P({task.positive_class})",
        0.01,
        0.99,
        0.5,
        0.01,
        key="evaluate_threshold",
        help="An image is called positive when its probability is at or above this value.",
    )
results = {n: r.at(threshold) for n, r in results.items()}
reports = {titles[n]: r.report for n, r in results.items()}

st.subheader("Metrics" + (f" at threshold {threshold:.2f}" if binary else ""))
ui.show_metric_table(ui.metric_table(reports), "evaluate_metrics")
for note in sorted({n for r in reports.values() for n in r.notes}):
    st.caption(note)

# ----------------------------------------------------------------- curves and calibration
k = task.positive_index
if not binary:
    k = st.selectbox(
        "One-vs-rest curves for class",
        range(len(task.classes)),
        format_func=task.classes.__getitem__,
        key="evaluate_ovr_class",
    )
curves = {titles[n]: r.curves(k) for n, r in results.items()}
ui.show_curves(curves, binary, "evaluate")

c1, c2 = st.columns(2)
c1.plotly_chart(charts.reliability({m: c.reliability for m, c in curves.items()}), key="evaluate_reliability")
with c2:
    cm_model = st.selectbox("Confusion matrix of", list(reports), key="evaluate_cm_model")
    report = reports[cm_model]
    st.plotly_chart(
        charts.confusion(
            report.confusion_matrix,
            charts.row_normalised(report.confusion_matrix),
            task.classes,
            "Confusion matrix" + (f" at threshold {threshold:.2f}" if binary else ""),
        ),
        key="evaluate_cm",
    )

# ----------------------------------------------------------------- per-image drill-down
st.subheader("Per image")
entry_by_name = {e.name: e for e in entries}
focus = st.selectbox("Model", list(results), format_func=titles.__getitem__, key="evaluate_focus")
rows = results[focus].per_image_rows()
st.caption(
    "Most confident mistakes first. Click a row (or choose an image below) to see it with its explanations."
)
event = st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    height=300,
    on_select="rerun",
    selection_mode="single-row",
    key=f"evaluate_table_{focus}",
)
selected = event.selection.rows[0] if event is not None and event.selection.rows else None
choice = st.selectbox(
    "Image",
    range(len(rows)),
    index=selected if selected is not None else 0,
    format_func=lambda i: (
        f"{rows[i]['file']} · truth {rows[i]['label']} · predicted "
        f"{rows[i]['predicted']} ({rows[i]['confidence']:.2f})"
    ),
    key=f"evaluate_image_{focus}_{selected}",
)
all_rows = [{"model": n, **row} for n, r in results.items() for row in r.per_image_rows()]
st.download_button(
    "Download per-image results (CSV)",
    frame_to_csv(pd.DataFrame(all_rows)),
    file_name=f"{task.name}_per_image.csv",
    mime="text/csv",
    key="evaluate_csv_download",
)

with page_errors("Explaining the image"):
    sample = next(s for s in sets[focus].data.samples if s.name == rows[choice]["file"])
    item = sample_input(sample, task.classes)
    methods, settings, display = settings_panel("evaluate", default_methods=("gradcam",))
    if methods:
        explanation_grid(task.name, [entry_by_name[focus]], item, methods, settings, display, "evaluate")

# ----------------------------------------------------------------- localisation
from medmodels.explain.localise_survey import localisation_region  # noqa: E402

if localisation_region(task.name):
    with page_errors("Localisation scores"):
        localisation_section(task, [e for e in entries if e.name in results], sets, "evaluate")

# ----------------------------------------------------------------- stored cross-validation
ui.show_stored_cv(task, list(results), titles)
