"""Explanation widgets shared by the pages: method settings, the overlay grid, the figure download."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from dashboard import compute
from dashboard.common import InputImage, as_text, trained_model

COLORMAPS = ("auto", "jet", "turbo", "viridis", "inferno", "magma", "hot", "RdBu_r", "coolwarm")
TILE = 224


@dataclass(frozen=True)
class Display:
    """How maps are drawn (not part of the cached computation)."""

    opacity: float = 0.5
    colormap: str = "auto"
    faithfulness: bool = True
    faithfulness_steps: int = 10
    lung_outline: bool = False  # draw the predicted lung field over chest X-rays

    @property
    def cmap(self) -> str | None:
        return None if self.colormap == "auto" else self.colormap


def settings_panel(
    key: str, default_methods: Sequence[str] = ("gradcam", "ig")
) -> tuple[list[str], Any, Display]:
    """Methods, ExplainSettings and display options, from widgets in an expander."""
    from medmodels.explain import BASELINES, METHODS, ExplainSettings

    methods = st.multiselect(
        "Explanation methods",
        list(METHODS),
        default=list(default_methods),
        format_func=METHODS.__getitem__,
        key=f"{key}_methods",
    )
    with st.expander("Method settings and display", expanded=False):
        c1, c2, c3 = st.columns(3)
        ig_steps = c1.slider(
            "IG steps",
            4,
            128,
            32,
            step=4,
            key=f"{key}_ig_steps",
            help="Integration steps of Integrated Gradients (more: slower, smoother).",
        )
        baseline = c1.selectbox(
            "IG / occlusion baseline",
            list(BASELINES),
            key=f"{key}_baseline",
            format_func=lambda b: f"{b}: {BASELINES[b]}",
        )
        window = c2.slider(
            "Occlusion window (pixels, 0 = an eighth of the side)", 0, 64, 0, key=f"{key}_window"
        )
        samples = c2.slider("SmoothGrad samples", 2, 64, 16, key=f"{key}_sg_samples")
        opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}_opacity")
        colormap = c3.selectbox(
            "Colormap",
            COLORMAPS,
            key=f"{key}_cmap",
            help="auto: jet for positive maps, red-blue around zero for signed maps.",
        )
        faith = st.checkbox(
            "Faithfulness scores (deletion / insertion AUC against a random order)",
            value=True,
            key=f"{key}_faith",
        )
    settings = ExplainSettings(
        ig_steps=ig_steps,
        ig_baseline=baseline,
        smoothgrad_samples=samples,
        occlusion_window=window or None,
        internal_batch_size=16,
    )
    return methods, settings, Display(opacity, colormap, faith)


@st.cache_data(show_spinner=False, max_entries=256, max_size="128MB", ttl=3600)
def lung_field(key: str, _image: Any) -> Any:
    """The image's predicted lung field (``medmodels.lungs.LungField``), or why there is none."""
    from medmodels.errors import WeightsError
    from medmodels.explain import model_lock
    from medmodels.lungs import load_lung_model, segment_lungs

    try:
        model, _ = load_lung_model()
    except WeightsError as err:
        return f"lung model not available ({err})"
    with model_lock(model):
        return segment_lungs(_image, model)


def region(entry: Any, item: InputImage) -> tuple[Any, Any]:
    """(lung field, cell box) the maps are scored against: the predicted lung field of an X-ray
    (or why there is none), the labelled cell's box of a bundled WBC example."""
    from medmodels.explain.localise import bundled_box

    if entry.task_spec.modality == "x-ray":
        return lung_field(item.key, item.image), None
    return None, bundled_box(item.image)


def explained(task: str, entry: Any, item: InputImage, methods: Sequence[str], settings: Any,
              faithfulness_steps: int | None = None) -> Any:
    """``compute.explained`` (an ``ImageExplanation``) with the image's scoring region."""
    field, box = region(entry, item)
    return compute.explained(task, entry.name, item.key, tuple(methods), settings, faithfulness_steps,
                             item.image, field, box)


def with_outline(picture: Image.Image, field: Any, entry: Any) -> Image.Image:
    """The tile with the lung field's outline drawn on it (model-view frame)."""
    from medmodels.explain.localise import lung_region
    from medmodels.lungs import draw_outline

    mask = lung_region(field, (picture.height, picture.width), entry.preprocess)
    return draw_outline(picture, mask, width=1)


def score_caption(scores: Sequence[Any]) -> str:
    """One line under a map: share inside the region next to chance, or the note why not."""
    return " · ".join(dict.fromkeys(s.text() for s in scores))  # one note when both say the same


FAITH_LEGEND = (
    "Faithfulness under each map: **deletion AUC** ↓ (removing the top-ranked pixels first should "
    "drop the probability fast) and **insertion AUC** ↑, each next to the same score for a random "
    "pixel order."
)


def details(extra: dict) -> str:
    """The settings a method reports having used (layer, window, convergence), for the caption."""
    words = {"cam_layer": "layer", "window": "window", "stride": "stride", "convergence_delta": "δ"}
    parts = [
        f"{words[k]} {v:.3g}" if isinstance(v, float) else f"{words[k]} {v}"
        for k, v in extra.items()
        if k in words
    ]
    return (" · " + ", ".join(parts)) if parts else ""


def faith_caption(f: dict[str, float]) -> str:
    return (
        f"deletion {f['deletion_auc']:.3f} ↓ (random {f['random_deletion_auc']:.3f}) · "
        f"insertion {f['insertion_auc']:.3f} ↑ (random {f['random_insertion_auc']:.3f})"
    )


@dataclass(frozen=True)
class Grid:
    """What the explanation grid showed: the numbers per model and method, and the labelled tiles
    (rows = models: model view, then one overlay per method) for the figure download."""

    numbers: dict[str, Any]
    tiles: list[list[tuple[str, Image.Image]]]


def explanation_grid(
    task: str,
    entries: Sequence[Any],
    item: InputImage,
    methods: Sequence[str],
    settings: Any,
    display: Display,
    key: str,
) -> Grid:
    """Rows = models, columns = methods: each model's ``ImageExplanation`` laid out."""
    from medmodels.explain import METHODS

    numbers: dict[str, Any] = {}
    tiles: list[list[tuple[str, Image.Image]]] = []
    bar = st.progress(0.0, text="Computing explanations…") if entries and methods else None
    width = max(4, 1 + len(methods))  # tiles no wider than a quarter of the page
    if display.faithfulness:
        st.caption(FAITH_LEGEND)
    header = st.columns(width)
    header[0].markdown("**What the model sees**")
    for col, m in zip(header[1:], methods):
        col.markdown(f"**{METHODS[m]}**")
    for done, entry in enumerate(entries, 1):
        result = explained(task, entry, item, methods, settings,
                           display.faithfulness_steps if display.faithfulness else None)
        field = region(entry, item)[0] if display.lung_outline and entry.task_spec.modality == "x-ray" else None
        outlined = (lambda picture: with_outline(picture, field, entry)) if field is not None and not isinstance(
            field, str) else (lambda picture: picture)
        cols = st.columns(width)
        view = outlined(result.view)
        cols[0].image(view, caption=entry.title, width="stretch")
        row = [(entry.title, view)]
        for col, method in zip(cols[1:], methods):
            m = result.maps[method]
            picture = outlined(result.overlay(method, display.cmap, display.opacity))
            col.image(
                picture,
                width="stretch",
                caption=f"{result.classes[m.target]} ({m.probability:.2f}) · {m.seconds:.2f} s" + details(m.extra),
            )
            if m.localisation:
                col.caption(score_caption(m.localisation))
            if m.faithfulness is not None:
                col.caption(faith_caption(m.faithfulness_numbers()))
            row.append((METHODS[method], picture))
        numbers[entry.name] = result.numbers()
        tiles.append(row)
        if bar:
            bar.progress(done / len(entries), text=f"Computed the explanations of {done} of {len(entries)} models")
    if bar:
        bar.empty()
    return Grid(numbers, tiles)


def faithfulness_section(task: str, entries: Sequence[Any], item: InputImage, methods: Sequence[str],
                         settings: Any, display: Display, key: str) -> None:
    """The deletion and insertion curves behind the AUCs under one map (from the cached result)."""
    from dashboard import charts
    from medmodels.explain import METHODS

    if not display.faithfulness or not entries or not methods:
        return
    with st.expander("Deletion and insertion curves behind the faithfulness scores"):
        c1, c2 = st.columns(2)
        titles = {e.name: e.title for e in entries}
        name = c1.selectbox("Model", list(titles), format_func=titles.__getitem__, key=f"{key}_faith_model")
        method = c2.selectbox("Method", list(methods), format_func=METHODS.__getitem__, key=f"{key}_faith_method")
        entry = next(e for e in entries if e.name == name)
        result = explained(task, entry, item, methods, settings, display.faithfulness_steps)
        st.plotly_chart(
            charts.faithfulness_curves(result.maps[method].faithfulness, f"{entry.title}: {METHODS[method]}"),
            key=f"{key}_faith_chart",
        )


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def compose_figure(tiles: Sequence[Sequence[tuple[str, Image.Image]]], title: str) -> bytes:
    """The grid as one PNG: rows = models, columns = model view + methods, each tile labelled."""
    rows, cols = len(tiles), max((len(r) for r in tiles), default=0)
    pad, label_h, head = 8, 22, 30
    width = pad + cols * (TILE + pad)
    height = head + rows * (TILE + label_h + pad) + pad
    canvas = Image.new("RGB", (max(width, 300), height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill="black", font=_font(16))
    for r, row in enumerate(tiles):
        y = head + r * (TILE + label_h + pad)
        for c, (label, img) in enumerate(row):
            x = pad + c * (TILE + pad)
            draw.text((x, y), label[:34], fill="black", font=_font(13))
            canvas.paste(img.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST), (x, y + label_h))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- localisation over a set


@st.cache_data(show_spinner=False, max_entries=64, ttl=3600)
def set_localisation(task: str, name: str, data_key: str, methods: tuple[str, ...], settings: Any,
                     max_images: int, _data: Any) -> dict:
    """Mean localisation per method of one model over the first ``max_images`` of a labelled set."""
    from medmodels.data.images import WORK_SIDE, load_image
    from medmodels.explain import model_lock
    from medmodels.explain.localise_survey import lung_fields_for, score_samples

    model, card = trained_model(task, name)
    samples = list(_data.samples)[:max_images]
    images = [load_image(s.source, s.name, max_side=WORK_SIDE) for s in samples]
    fields = lung_fields_for(samples, images) if card.entry.task_spec.modality == "x-ray" else None
    bar = st.progress(0.0, text=f"Scoring {card.entry.title}'s maps…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Scoring {card.entry.title}'s maps: {done} of {total}")

    with model_lock(model):
        scores, problems = score_samples(model, card.entry, samples, images, methods,
                                         lambda m: settings, fields, progress=progress)
    bar.empty()
    return {"scores": scores, "problems": problems, "n": len(samples)}


def localisation_rows(title: str, result: dict) -> list[dict]:
    from medmodels.explain import METHODS

    rows = []
    for method, m in result["scores"].items():
        row = {"model": title, "method": METHODS[method], "images scored": m["n_scored"],
               "inside": m["inside_mean"], "chance": m["chance_mean"], "inside / chance": m["ratio_mean"]}
        if "dilated_inside_mean" in m:
            row.update({"inside (dilated)": m["dilated_inside_mean"], "chance (dilated)": m["dilated_chance_mean"]})
        row["not scored"] = ", ".join(f"{k}: {v}" for k, v in m["not_computed"].items())
        rows.append(row)
    return rows


def localisation_section(task: Any, entries: Sequence[Any], sets: dict, key: str) -> None:
    """Evaluate's "Where do the models look?": mean share inside the lungs / cell box per model and method."""
    import pandas as pd

    from medmodels.explain import METHODS, ExplainSettings

    st.subheader("Where do the models look?")
    region = "the predicted lung field" if task.modality == "x-ray" else "the labelled cell's box"
    st.caption(
        f"Share of each map's positive attribution inside {region}, averaged over the set, next to "
        "chance (the region's share of the image: what an evenly spread map scores). "
        + ("X-rays whose lung field is implausible are not scored. " if task.modality == "x-ray" else
           "Cell boxes come from x0, y0, x1, y1 columns of the label CSV, a VOC XML file beside each "
           "image, or the BCCD annotations; rows with a bad box are listed and skipped. ")
    )
    c1, c2 = st.columns(2)
    methods = c1.multiselect("Methods", list(METHODS), default=["gradcam"], format_func=METHODS.__getitem__,
                             key=f"{key}_loc_methods")
    largest = max(len(s.data.samples) for s in sets.values())
    n = c2.slider("Images (the first N of the set)", 1, max(largest, 1), min(20, largest), key=f"{key}_loc_n") \
        if largest > 1 else largest
    if not methods or not st.button("Score the maps", key=f"{key}_loc_run"):
        return
    rows, problems = [], []
    for e in entries:
        if e.name not in sets:
            continue
        test = sets[e.name]
        result = set_localisation(task.name, e.name, test.key, tuple(methods), ExplainSettings(), n, test.data)
        rows += localisation_rows(e.title, result)
        problems += result["problems"]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                ("inside", "chance", "inside / chance", "inside (dilated)", "chance (dilated)")})
    for name, problem in dict(problems).items():
        st.warning(f"{as_text(name)}: {as_text(problem)}; its box is skipped.")


def lung_share_columns(entries: Sequence[Any], maps: dict) -> dict:
    """Compare's per-image columns: each model's share of its map (a ``MethodMap``) inside the lung field."""
    out: dict[str, Any] = {}
    chance = None
    for e in entries:
        if e.task_spec.modality != "x-ray":
            return {}
        scores = maps[e.name].localisation
        out[f"inside lungs: {e.title}"] = scores[0].inside if scores else None
        chance = scores[0].chance if scores else None
    return {**out, "lung field's share (chance)": chance} if out else out


def lung_share_caption(table: Any) -> str:
    """Mean inside-the-lungs share per model over the compared images, next to chance."""
    cols = [c for c in table.columns if str(c).startswith("inside lungs: ")]
    if not cols:
        return ""
    means = ", ".join(f"{c.removeprefix('inside lungs: ')} {table[c].mean():.0%}" for c in cols
                      if table[c].notna().any())
    chance = table["lung field's share (chance)"]
    scored = int(table[cols[0]].notna().sum())
    return (f"Share of Grad-CAM inside the predicted lung field (mean over {scored} X-ray(s) with a "
            f"plausible field): {means or 'none scored'}; chance {chance.mean():.0%}." if scored else
            "No compared X-ray had a plausible lung field; the inside-the-lungs share was not computed.")
