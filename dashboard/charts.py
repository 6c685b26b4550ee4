"""Plotly figures drawn from the library's data objects (curves, reliability, confusion).

Only drawing happens here: every number plotted was computed by ``medmodels.metrics``
or ``medmodels.explain``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
HEIGHT = 380


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=HEIGHT,
        margin=dict(l=50, r=20, t=50, b=45),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def probability_bars(probs: Mapping[str, Sequence[float]], classes: Sequence[str]) -> go.Figure:
    """Grouped bars: one group per class, one bar per model."""
    fig = go.Figure()
    for i, (model, values) in enumerate(probs.items()):
        fig.add_bar(
            x=list(classes),
            y=[float(v) for v in values],
            name=model,
            marker_color=PALETTE[i % len(PALETTE)],
            text=[f"{float(v):.2f}" for v in values],
            textposition="outside",
        )
    fig.update_yaxes(range=[0, 1.12])
    _layout(fig, "Predicted probabilities", "class", "probability")
    fig.update_layout(height=320, barmode="group")
    return fig


def curves(
    data: Mapping[str, object], kind: str, operating: Mapping[str, tuple[float, float]] | None = None
) -> go.Figure:
    """ROC (kind="roc") or precision-recall (kind="pr") curves of several models on one chart.

    ``data`` maps a label to a ``CurveData``; ``operating`` optional (x, y) points to mark
    (the current threshold).
    """
    fig = go.Figure()
    if kind == "roc":
        fig.add_scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line=dict(dash="dot", color="grey"),
            hoverinfo="skip",
        )
    for i, (label, curve) in enumerate(data.items()):
        color = PALETTE[i % len(PALETTE)]
        if not curve.x or not curve.y:
            continue
        auc = "n/a" if curve.auc is None else f"{curve.auc:.3f}"
        if curve.auc_std is not None:
            auc += f" ± {curve.auc_std:.3f}"
        if curve.y_std:
            y, s = np.asarray(curve.y), np.asarray(curve.y_std)
            fig.add_scatter(
                x=list(curve.x) + list(curve.x)[::-1],
                y=list(np.clip(y + s, 0, 1)) + list(np.clip(y - s, 0, 1))[::-1],
                fill="toself",
                line=dict(width=0),
                fillcolor=color,
                opacity=0.15,
                showlegend=False,
                hoverinfo="skip",
            )
        custom = curve.thresholds if curve.thresholds else None
        fig.add_scatter(
            x=curve.x,
            y=curve.y,
            mode="lines",
            name=f"{label} ({'AUC' if kind == 'roc' else 'AP'} {auc})",
            line=dict(color=color, width=2),
            customdata=custom,
            hovertemplate=(
                "x %{x:.3f}, y %{y:.3f}"
                + (", threshold %{customdata:.3f}" if custom else "")
                + "<extra></extra>"
            ),
        )
        if operating and label in operating:
            ox, oy = operating[label]
            fig.add_scatter(
                x=[ox],
                y=[oy],
                mode="markers",
                marker=dict(color=color, size=11, symbol="x"),
                showlegend=False,
                hovertemplate="current threshold<extra></extra>",
            )
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.02])
    if kind == "roc":
        return _layout(
            fig, "ROC curve", "false positive rate (1 − specificity)", "true positive rate (sensitivity)"
        )
    return _layout(fig, "Precision-recall curve", "recall (sensitivity)", "precision")


def reliability(data: Mapping[str, object]) -> go.Figure:
    """Reliability diagram: observed frequency against confidence per bin, with the diagonal."""
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name="perfect calibration",
        line=dict(dash="dot", color="grey"),
        hoverinfo="skip",
    )
    for i, (label, rel) in enumerate(data.items()):
        fig.add_scatter(
            x=rel.bin_confidence,
            y=rel.bin_accuracy,
            mode="lines+markers",
            name=f"{label} (ECE {rel.ece:.3f})",
            line=dict(color=PALETTE[i % len(PALETTE)]),
            customdata=rel.bin_count,
            hovertemplate="confidence %{x:.2f}, observed %{y:.2f}, %{customdata} images<extra></extra>",
        )
    kind = next(iter(data.values())).kind if data else "top_label"
    x = (
        "mean predicted probability of the positive class"
        if kind == "positive_class"
        else "confidence (top class)"
    )
    y = "fraction positive" if kind == "positive_class" else "accuracy"
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, "Reliability diagram", x, y)


def confusion(
    counts: Sequence[Sequence[int]], normalised: Sequence[Sequence[float]], classes: Sequence[str], title: str
) -> go.Figure:
    """Heat map of a confusion matrix (rows = truth, columns = prediction): each cell shows the
    count and its share of the true class; the colour follows the share."""
    z = np.asarray(normalised, dtype=float)
    text = [[f"{int(c)}<br>{v:.0%}" for c, v in zip(crow, vrow)] for crow, vrow in zip(counts, z)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(classes),
            y=list(classes),
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title="share of<br>true class", tickformat=".0%"),
            hovertemplate="truth %{y}, predicted %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, "predicted class", "true class")


def row_normalised(matrix: Sequence[Sequence[int]]) -> list[list[float]]:
    """Each truth row divided by its count (for display; empty rows stay 0)."""
    m = np.asarray(matrix, dtype=float)
    sums = m.sum(axis=1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0).tolist()


def faithfulness_curves(result: object, title: str) -> go.Figure:
    """Deletion and insertion curves of one map (a ``FaithfulnessResult`` of one image), each
    beside the same curve for a random pixel order (dashed)."""
    fig = go.Figure()
    x = [float(v) for v in result.fractions]  # type: ignore[attr-defined]
    for i, (kind, color) in enumerate((("deletion", PALETTE[1]), ("insertion", PALETTE[0]))):
        y = getattr(result, f"{kind}_curve")[0]
        rnd = getattr(result, f"random_{kind}_curve")[0]
        fig.add_scatter(x=x, y=[float(v) for v in y], name=kind, mode="lines", line=dict(color=color))
        fig.add_scatter(x=x, y=[float(v) for v in rnd], name=f"{kind}, random order", mode="lines",
                        line=dict(color=color, dash="dash"))
    fig.update_yaxes(range=[0, 1.02])
    _layout(fig, title, "fraction of pixels removed / inserted", "probability of the class")
    fig.update_layout(height=300)
    return fig


def sanity_curve(layers: Sequence[str], spearman: Sequence[float], title: str) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=list(layers), y=list(spearman), mode="lines+markers", name="rank correlation")
    fig.update_yaxes(range=[-1.02, 1.02])
    _layout(fig, title, "layers randomised (top down, cumulative)", "Spearman ρ with the original map")
    fig.update_layout(height=320)
    return fig
