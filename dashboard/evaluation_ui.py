"""Evaluate-page helpers: choosing the labelled set, metric tables, stored cross-validation data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import compute
from dashboard.common import EXAMPLES_DIR, as_text, digest, trained_model

SOURCES = {
    "upload": "Upload a labelled test set (zip)",
    "heldout": "Bundled test split (each model's own held-out split)",
    "examples": "Bundled example images (a tiny labelled set)",
}
# The metrics of the papers, in the order their tables use; others follow.
METRIC_ORDER = (
    "n",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "mcc",
    "roc_auc",
    "pr_auc",
    "tp",
    "tn",
    "fp",
    "fn",
    "tpr",
    "tnr",
    "fpr",
    "fnr",
    "ece",
)


@dataclass(frozen=True)
class TestSet:
    """A labelled set for one model and the key its evaluation is cached under."""

    data: Any  # LabelledSet
    key: str
    label: str


def upload_widgets(task: Any) -> tuple[Any, Any]:
    folders = ", ".join(f"`{c}/…`" for c in task.classes)
    st.markdown(
        f"A **zip of class folders** ({folders}), or a **zip of images with a CSV** "
        "`filename,label[,patient_id]` inside it or uploaded beside it. The zip is read in memory "
        "and never stored."
    )
    c1, c2 = st.columns([2, 1])
    archive = c1.file_uploader("Labelled test set (zip)", type=["zip"], key=f"evaluate_zip_{task.name}")
    labels = c2.file_uploader("Label CSV (optional)", type=["csv"], key=f"evaluate_csv_{task.name}")
    return archive, labels


def uploaded_set(task: Any, archive: Any, labels: Any) -> TestSet:
    data = archive.getvalue()
    csv = labels.getvalue() if labels is not None else None
    key, csv_key = digest(data), (digest(csv) if csv is not None else None)
    labelled = compute.labelled_upload(key, tuple(task.classes), archive.name, data, csv, csv_key)
    return TestSet(labelled, f"upload:{key}:{csv_key}", archive.name)


def examples_set(task: Any) -> TestSet:
    labelled = compute.labelled_folder(str(EXAMPLES_DIR / task.name), tuple(task.classes))
    return TestSet(labelled, f"examples:{task.name}", "bundled examples")


def test_split_set(task: Any, name: str) -> TestSet:
    """The model's own held-out split (``medmodels.evaluate.held_out_set``) as a page's test set."""
    labelled = compute.model_test_split(task.name, name)
    return TestSet(labelled, f"heldout:{task.name}:{name}", "held-out test split")


def test_sets(task: Any, entries: list, source: str) -> dict[str, TestSet]:
    """The labelled set each model is evaluated on: one upload or bundled set shared by all, or
    each model's own held-out split (a model without one gets a warning; the others still run)."""
    from medmodels.errors import MedModelsError

    if source == "upload":
        archive, labels_csv = upload_widgets(task)
        if archive is None:
            st.info("Upload a zip to evaluate, or choose a bundled set above.")
            st.stop()
        with st.spinner("Reading the zip (in memory)…"):
            shared = uploaded_set(task, archive, labels_csv)
    elif source == "examples":
        shared = examples_set(task)
    else:
        sets = {}
        for e in entries:
            try:
                sets[e.name] = test_split_set(task, e.name)
            except MedModelsError as err:
                st.warning(as_text(f"{e.title}: {err} The bundled example images can be used instead."))
        return sets
    return {e.name: shared for e in entries}


def show_skipped(data: Any) -> None:
    if data.skipped:
        with st.expander(f"{len(data.skipped)} file(s) left out of the set"):
            st.dataframe(
                pd.DataFrame([{"file": s.name, "reason": s.reason} for s in data.skipped]),
                hide_index=True,
                width="stretch",
            )


def metric_table(reports: dict[str, Any]) -> pd.DataFrame:
    """Rows = models, columns = metrics in the papers' order (as their tables are laid out)."""
    keys = [k for k in METRIC_ORDER if any(k in r.metrics for r in reports.values())]
    keys += sorted({k for r in reports.values() for k in r.metrics} - set(keys))
    return pd.DataFrame(
        [{"model": label, **{k: r.metrics.get(k) for k in keys}} for label, r in reports.items()]
    ).set_index("model")


COUNT_KEYS = ("n", "tp", "tn", "fp", "fn", "support")


def show_metric_table(table: pd.DataFrame, key: str) -> None:
    """Counts as integers, rates with four decimals."""
    config = {
        c: st.column_config.NumberColumn(c, format="%d" if c in COUNT_KEYS else "%.4f") for c in table.columns
    }
    st.dataframe(table, width="stretch", column_config=config, key=key)


def show_curves(curves: dict[str, Any], binary: bool, key: str) -> None:
    """ROC and PR charts side by side (``medmodels.evaluate.Curves`` per model label), with each
    model's operating point at the current threshold marked on binary tasks."""
    from dashboard import charts

    label = next(iter(curves.values())).label if curves else ""
    roc_points = {m: c.roc_point for m, c in curves.items() if c.roc_point is not None}
    pr_points = {m: c.pr_point for m, c in curves.items() if c.pr_point is not None}
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        charts.curves({m: c.roc for m, c in curves.items()}, "roc", roc_points).update_layout(
            title=f"ROC curve ({label})"
        ),
        key=f"{key}_roc",
    )
    c2.plotly_chart(
        charts.curves({m: c.pr for m, c in curves.items()}, "pr", pr_points).update_layout(
            title=f"Precision-recall ({label})"
        ),
        key=f"{key}_pr",
    )
    for model, c in curves.items():
        for note in c.roc.notes:
            st.caption(f"{model}: {note}")
    if binary:
        st.caption("× marks each model's operating point at the current threshold.")


# --------------------------------------------------------------------------- stored CV data


def cv_fold_curves(task: Any, name: str) -> dict[str, list]:
    """Per-fold ROC and PR curves from a model's predictions.csv (written by ``medmodels.train.run``)."""
    from medmodels.metrics import pr_curve_data, roc_curve_data

    _model, card = trained_model(task.name, name)
    out: dict[str, list] = {"roc": [], "pr": []}
    table = Path(card.folder) / "predictions.csv"
    if table.is_file() and task.positive_index is not None:
        frame = pd.read_csv(table)
        cls = task.classes[task.positive_index]
        score = f"score_{cls}"  # the engine's one column name (train.run.write_predictions)
        if score in frame.columns:
            for _fold, part in frame.groupby("fold", sort=True):
                truth = (part["label"].astype(str) == cls).to_numpy()
                out["roc"].append(roc_curve_data(truth, part[score].to_numpy()))
                out["pr"].append(pr_curve_data(truth, part[score].to_numpy()))
            return out
    return out  # the run record keeps per-fold metrics, not per-fold curves


def cv_summary(task: Any, name: str) -> pd.DataFrame | None:
    """Per-fold test metrics and, when stored, their mean and standard deviation (metrics.json)."""
    _model, card = trained_model(task.name, name)
    cv = card.record.cv if card.record is not None else None
    if cv is None:
        return None
    rows: dict[str, dict] = {f"fold {f.fold}": f.test.metrics for f in cv.folds}
    if cv.mean:
        rows["mean"] = cv.mean
        rows["std"] = cv.std or {}
    if not rows:
        return None
    keys = [k for k in METRIC_ORDER if any(k in r for r in rows.values())]
    return pd.DataFrame({label: [r.get(k) for k in keys] for label, r in rows.items()}, index=keys)


def cv_note(task: Any, name: str) -> str | None:
    record = trained_model(task.name, name)[1].record
    return record.cv.note if record is not None and record.cv is not None else None


def show_stored_cv(task: Any, names: list[str], titles: dict[str, str]) -> None:
    """Per-fold tables and curves of the training runs' cross-validation (stored with the weights)."""
    from dashboard import charts
    from dashboard.common import page_errors
    from medmodels.metrics import mean_curve

    def has_cv(name: str) -> bool:
        card = trained_model(task.name, name)[1]
        return (card.record is not None and card.record.cv is not None) or (card.folder / "predictions.csv").is_file()

    cv_models = [n for n in names if has_cv(n)]
    if not cv_models:
        return
    st.subheader("Cross-validation (stored with the weights)")
    st.caption("Per-fold curves of the training run's cross-validation, and their mean ± one standard deviation.")
    for name in cv_models:
        with page_errors("Cross-validation curves"):
            folds = cv_fold_curves(task, name)
            summary = cv_summary(task, name)
            st.markdown(f"**{titles[name]}**")
            if summary is not None:
                show_metric_table(summary.T, f"evaluate_cv_table_{name}")
            if cv_note(task, name):
                st.caption(cv_note(task, name))
            if folds["roc"]:
                c1, c2 = st.columns(2)
                for col, kind in ((c1, "roc"), (c2, "pr")):
                    curves = {f"fold {i + 1}": c for i, c in enumerate(folds[kind])}
                    curves["mean"] = mean_curve(folds[kind])
                    col.plotly_chart(charts.curves(curves, kind), key=f"evaluate_cv_{kind}_{name}")
            elif summary is None:
                st.caption("No per-fold data stored for this model.")
