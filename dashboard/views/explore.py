"""Explore: one or more images through one or more models, with explanations side by side."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import streamlit as st

from dashboard import charts, compute
from dashboard.common import (
    IMAGE_TYPES,
    as_text,
    example_files,
    model_picker,
    page_errors,
    page_header,
    read_inputs,
    task_picker,
)
from dashboard.explain_ui import compose_figure, explanation_grid, faithfulness_section, settings_panel

page_header(
    "Explore", "Pick a task and models, give an image, and see what each model predicts and where it looked."
)

task = task_picker("explore_task")
st.caption(task.description)
entries = model_picker(task.name, "explore_models", label="Models (one or more)")

left, right = st.columns(2)
uploads = left.file_uploader(
    "Upload images (PNG, JPEG, TIFF, BMP, DICOM)",
    type=IMAGE_TYPES,
    accept_multiple_files=True,
    key=f"explore_upload_{task.name}",
)
examples = example_files(task.name)
picked = right.multiselect(
    "…or pick bundled examples (one or more per class)",
    range(len(examples)),
    format_func=lambda i: f"{examples[i][0]} · {examples[i][1].name}",
    key=f"explore_examples_{task.name}",
)

images = read_inputs(uploads or [], [examples[i] for i in picked])
if not entries or not images:
    if not images:
        st.info("Upload an image or pick a bundled example to start.")
    st.stop()

def stored_ece(entry: object) -> float | None:
    """The calibration error measured on the model's test split when it was trained."""
    record = compute.trained_model(task.name, entry.name)[1].record
    return record.test.metrics.get("ece") if record is not None and record.test is not None else None


item = None
with page_errors("Prediction"):
    rows, per_image = [], {}
    for image in images:
        probs = {e.title: compute.image_probabilities(task.name, e.name, image.key, image.image) for e in entries}
        per_image[image.key] = probs
        for e in entries:
            p = probs[e.title]
            k = int(p.argmax())
            rows.append(
                {
                    "image": image.name,
                    "model": e.title,
                    "predicted": task.classes[k],
                    "probability": float(p[k]),
                    **({"bundled label": image.label} if image.label else {}),
                    **{f"p({c})": float(v) for c, v in zip(task.classes, p)},
                    "model's test ECE": stored_ece(e),
                }
            )
    st.subheader("Predictions")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        "Probabilities are the models' softmax outputs, not calibrated risks; the expected calibration "
        "error (ECE) each model had on its own test split says how far to trust them."
    )

    names = [i.name for i in images]
    current = (
        st.selectbox(
            "Image to explain", range(len(images)), format_func=names.__getitem__, key="explore_current"
        )
        if len(images) > 1
        else 0
    )
    chosen = images[current or 0]
    bars, img_col = st.columns([3, 1])
    img_col.image(chosen.image, caption=as_text(chosen.name), width="stretch")
    bars.plotly_chart(charts.probability_bars(per_image[chosen.key], task.classes), key="explore_bars")
    item = chosen
if item is None:  # the predictions failed; the message is shown above
    st.stop()

st.subheader("Explanations")
methods, settings, display = settings_panel("explore")
if task.modality == "x-ray":
    display = dataclasses.replace(display, lung_outline=st.toggle(
        "Show the lung outline", value=False, key="explore_lung_outline",
        help="The lung field predicted by lungs/unet_lite0, drawn over the model view and each map. "
        "Under each map: the share of positive attribution inside the lungs, next to chance.",
    ))
if not methods:
    st.info("Choose at least one explanation method.")
    st.stop()

with page_errors("Explanation"):
    grid = explanation_grid(task.name, entries, item, methods, settings, display, "explore")
    numbers = {"image": item.name, "settings": dataclasses.asdict(settings), "models": grid.numbers,
               "predictions": [r for r in rows if r["image"] == item.name]}
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download the figure (PNG)",
        compose_figure(grid.tiles, f"{task.title}: {item.name}"),
        file_name="explanations.png",
        mime="image/png",
        key="explore_png",
    )
    c2.download_button(
        "Download the numbers (JSON)",
        json.dumps(numbers, indent=2),
        file_name="explanations.json",
        mime="application/json",
        key="explore_json",
    )
    faithfulness_section(task.name, entries, item, methods, settings, display, "explore")

with st.expander("Sanity check: does the map change when the model's weights are randomised?"):
    st.caption(
        "Cascading randomisation (Adebayo et al., 2018): layers are re-initialised from the top; "
        "a map that keeps a high rank correlation with the original does not depend on what the "
        "model learned."
    )
    c1, c2, c3 = st.columns(3)
    model_name = c1.selectbox(
        "Model",
        [e.name for e in entries],
        format_func={e.name: e.title for e in entries}.__getitem__,
        key="explore_sanity_model",
    )
    method = c2.selectbox("Method", methods, key="explore_sanity_method")
    layers = c3.slider("Layers to randomise", 1, 12, 4, key="explore_sanity_layers")
    if st.button("Run the sanity check", key="explore_sanity_run"):
        with page_errors("The sanity check"), st.spinner("Randomising layers…"):
            s = compute.sanity(task.name, model_name, item.key, method, settings, layers, item.image)
            st.plotly_chart(
                charts.sanity_curve(s.layer_names, s.spearman[:, 0], "Rank correlation after randomisation"),
                key="explore_sanity_chart",
            )
