"""Compare two models: teacher vs distilled student, or a shallow CNN vs a deep baseline."""

from __future__ import annotations

import streamlit as st

from dashboard import compare_ui as cmp
from dashboard import compute
from dashboard import evaluation_ui as ui
from dashboard.common import (
    model_choice,
    page_errors,
    page_header,
    sample_input,
    show_missing,
    task_picker,
    trained_model,
)
from dashboard.explain_ui import lung_share_caption

MODES = {
    "kd": ("Teacher vs student (knowledge distillation)", ("teacher", "student")),
    "depth": ("Shallow vs deep", ("shallow", "deep")),
}

page_header(
    "Compare",
    "Two models side by side: size, speed on this machine, metrics, where their predictions "
    "disagree and how similar their Grad-CAMs are.",
)

from medmodels.zoo.registry import list_models, list_tasks  # noqa: E402

mode = st.radio(
    "Comparison", list(MODES), format_func=lambda m: MODES[m][0], horizontal=True, key="compare_mode"
)
families = MODES[mode][1]
tasks = [
    t.name for t in list_tasks() if all(any(e.family == f for e in list_models(t.name)) for f in families)
]
task = task_picker(f"compare_task_{mode}", tasks)

pickers = st.columns(2)
chosen = []
for col, family in zip(pickers, families):
    with col:
        choice = model_choice(task.name, [family])
        if not choice.available:
            st.info(f"No {family} model of this task has trained weights yet.")
            show_missing(choice)
            continue
        names = [e.name for e in choice.available]
        pick = st.selectbox(
            f"{family.capitalize()} model",
            names,
            key=f"compare_{mode}_{task.name}_{family}",
            format_func={e.name: e.title for e in choice.available}.__getitem__,
        )
        chosen.append(next(e for e in choice.available if e.name == pick))
        show_missing(choice)
if len(chosen) < 2:
    st.stop()
a, b = chosen

# ----------------------------------------------------------------- size and speed
st.subheader("Size and speed")
with page_errors("Loading the models"):
    loaded = {e.name: trained_model(task.name, e.name) for e in chosen}
    measured = st.session_state.setdefault("compare_latency", {})
    if st.button("Measure CPU latency on this machine now", key="compare_measure"):
        with st.spinner("Timing batch-1 inference…"):
            for e in chosen:
                measured[e.key] = compute.latency(task.name, e.name)["ms_per_image_batch1"]
    cmp.size_table(task, chosen, loaded, measured)
    if not measured.get(a.key):
        st.caption("Latency is measured on demand: it takes a few seconds of this machine's CPU.")

    st.subheader("Metrics on each model's test split (stored with the weights)")
    reports = {}
    for e in chosen:
        record = loaded[e.name][1].record
        if record is not None and record.test is not None:
            reports[e.title] = record.test.report()
    if reports:
        ui.show_metric_table(ui.metric_table(reports), "compare_metrics")
    else:
        st.caption("No stored test metrics.")

# ----------------------------------------------------------------- agreement
st.subheader("Agreement of predictions")
sources = {
    "examples": "bundled example images",
    "heldout": f"held-out test split of {a.title} (may take minutes)",
}
source = st.radio(
    "Images", list(sources), format_func=sources.__getitem__, horizontal=True, key="compare_source"
)
test = None
with page_errors("Comparing predictions"):
    test = ui.examples_set(task) if source == "examples" else ui.test_split_set(task, a.name)
    res = {e.name: compute.evaluation(task.name, e.name, test.key, e.title, test.data) for e in chosen}
    from medmodels.metrics import prediction_agreement

    pred = {n: r.probs.argmax(1) for n, r in res.items()}
    agreement = prediction_agreement(pred[a.name], pred[b.name], len(task.classes))
    agree, kappa = agreement.agreement, agreement.cohen_kappa
    c1, c2, c3 = st.columns(3)
    c1.metric("Images", len(test.data))
    c2.metric("Same predicted class", f"{agree:.1%}")
    c3.metric("Cohen's κ", "n/a" if kappa is None else f"{kappa:.3f}")
    samples = {s.name: s for s in test.data.samples}
    names = res[a.name].names
    differ = agreement.disagreeing
    if differ:
        st.markdown(f"**Where they disagree** ({len(differ)} image(s); first 12 shown)")
        cols = st.columns(6)
        for j, i in enumerate(differ[:12]):
            s = samples[names[i]]
            cols[j % 6].image(
                sample_input(s, task.classes).image,
                width="stretch",
                caption=f"truth {task.classes[s.label]} · {a.title}: {task.classes[pred[a.name][i]]}"
                f" · {b.title}: {task.classes[pred[b.name][i]]}",
            )
    else:
        st.caption("The two models predict the same class on every image.")

# ----------------------------------------------------------------- Grad-CAM similarity
if test is None:
    st.stop()
st.subheader("How similar are their Grad-CAMs?")
c1, c2 = st.columns(2)
available = min(24, len(test.data))
count = (
    c1.slider("Images", 1, available, min(4, available), key="compare_count") if available > 1 else available
)
fraction = c2.slider("Top-k% region for IoU", 0.05, 0.5, 0.1, 0.05, key="compare_fraction")
with page_errors("Comparing Grad-CAMs"):
    table, pairs = cmp.cam_similarity(task, chosen, list(test.data.samples)[:count], fraction)
    st.dataframe(table, hide_index=True, width="stretch", key="compare_cam_table")
    st.caption(
        f"Mean rank correlation {table.iloc[:, 2].mean():.3f}; mean top-{fraction:.0%} IoU "
        f"{table.iloc[:, 3].mean():.3f} over {len(table)} image(s). Both maps explain each model's own "
        "predicted class."
    )
    if lung_share_caption(table):
        st.caption(lung_share_caption(table))
        from medmodels.explain.localise_survey import stored_summary

        if stored_summary(task.name, [e.name for e in chosen]):
            st.caption(stored_summary(task.name, [e.name for e in chosen]))
    cmp.cam_gallery(task, chosen, pairs[:6])

# ----------------------------------------------------------------- lung-only inputs (issue 19)
from medmodels.explain.localise_survey import lung_only_rows, lung_only_verdict  # noqa: E402

lung_only = [r for r in lung_only_rows() if r["task"] == task.name]
if lung_only:
    st.subheader("Full image vs lung-only inputs")
    st.caption(
        "The same architecture and held-out fold trained on X-rays cropped to the predicted lung field and "
        "black outside it (stored runs). " + lung_only_verdict(lung_only)
    )
    st.dataframe(lung_only, hide_index=True, width="stretch", key="compare_lung_only")
