"""Compare-page blocks: the size and speed table and the Grad-CAM gallery of two models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.common import sample_input
from dashboard.explain_ui import Display, explained, lung_share_columns


def size_table(task: Any, chosen: Sequence[Any], loaded: dict, measured: dict) -> None:
    """Parameters, size on disk, CPU latency (measured now and stored) and training time."""
    from medmodels.latency import stored_latency
    from medmodels.zoo.registry import count_parameters

    records = {n: c.record for n, (_, c) in loaded.items() if c.record is not None}
    weights_dirs = {c.folder.parent.parent for _, c in loaded.values()}
    stored = stored_latency(task.name, next(iter(weights_dirs)) if len(weights_dirs) == 1 else None, records)
    stored_label = ("CPU ms / image, timed together (stored)" if stored.same_run
                    else "CPU ms / image, after training")
    rows = []
    for e in chosen:
        model, card = loaded[e.name]
        weights = card.folder / "model.safetensors"
        rows.append(
            {
                "model": e.title,
                "parameters": count_parameters(model),
                "size on disk (MB)": weights.stat().st_size / 1e6 if weights.is_file() else None,
                "CPU ms / image, measured now": measured.get(e.key),
                stored_label: stored.ms_batch1.get(e.name),
                "training time (s)": card.record.training.seconds if card.record else None,
            }
        )
    st.dataframe(
        pd.DataFrame(rows).set_index("model"),
        width="stretch",
        key="compare_size",
        column_config={
            "parameters": st.column_config.NumberColumn(format="localized"),
            "size on disk (MB)": st.column_config.NumberColumn(format="%.2f"),
            "CPU ms / image, measured now": st.column_config.NumberColumn(format="%.2f"),
            stored_label: st.column_config.NumberColumn(format="%.2f"),
            "training time (s)": st.column_config.NumberColumn(format="%.0f"),
        },
    )
    if stored.same_run:
        st.caption(f"Stored latency: both models timed in one process, one after the other, on "
                   f"{stored.measured[:10]} (batch 1, one thread), so the two numbers compare.")
    else:
        st.caption("Stored latency: each model timed right after its own training, perhaps beside other "
                   "jobs on the machine, so the two numbers may not compare; measure them now to be sure.")


def cam_similarity(task: Any, chosen: Sequence[Any], samples: Sequence[Any], fraction: float
                   ) -> tuple[pd.DataFrame, list[tuple[Any, dict]]]:
    """Per image: rank correlation and top-``fraction`` IoU of the two models' Grad-CAMs (and, for
    X-rays, each one's share inside the lung field); with the (image, explanations) pairs."""
    from medmodels.explain import ExplainSettings, map_rank_correlation, topk_iou

    a, b = chosen
    settings = ExplainSettings()
    rows, pairs = [], []
    for s in samples:
        item = sample_input(s, task.classes)
        results = {e.name: explained(task.name, e, item, ("gradcam",), settings) for e in chosen}
        maps = {name: r.maps["gradcam"] for name, r in results.items()}
        rows.append(
            {
                "image": s.name,
                "truth": item.label,
                "rank correlation (Spearman)": map_rank_correlation(maps[a.name].map, maps[b.name].map),
                f"IoU of top {fraction:.0%}": topk_iou(maps[a.name].map, maps[b.name].map, fraction),
                **lung_share_columns(chosen, maps),
            }
        )
        pairs.append((item, results))
    return pd.DataFrame(rows), pairs


def cam_gallery(task: Any, chosen: Sequence[Any], pairs: Sequence[tuple[Any, dict]]) -> None:
    """Two (image, map A, map B) triplets per row: each model's Grad-CAM over what it sees."""
    display = Display(opacity=0.5)
    for start in range(0, len(pairs), 2):  # two (image, map A, map B) triplets per row
        cols = st.columns(6)
        for offset, (item, results) in enumerate(pairs[start : start + 2]):
            triplet = cols[3 * offset : 3 * offset + 3]
            triplet[0].image(item.image, caption=item.name, width="stretch")
            for col, e in zip(triplet[1:], chosen):
                m = results[e.name].maps["gradcam"]
                col.image(
                    results[e.name].overlay("gradcam", display.cmap, display.opacity),
                    width="stretch",
                    caption=f"{e.title}: {task.classes[m.target]} ({m.probability:.2f})",
                )
