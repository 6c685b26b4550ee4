"""Shortcut audits, registered per task and run by the engine on the model it ships.

A task whose data has a known shortcut registers an audit with ``@register_audit(task)``:
covid (the image *source* nearly gives the label away: the Actualmed subset, the one
source with both classes, never trained on) and mortality (the X-ray view is a
confounder). The task-wide image-source classifier is not per model: it is its own
record, ``weights/covid/source_audit.json`` (:func:`write_source_audit`).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from medmodels.data.samples import LabelledSet
from medmodels.record import SOURCE_AUDIT_FILE, Audits, SourceAudit, ViewAudit
from medmodels.zoo.registry import ModelEntry

log = logging.getLogger(__name__)


@dataclass
class AuditResult:
    audits: Audits
    rows: list[dict[str, Any]] = field(default_factory=list)  # per-image predictions, if any


AuditFn = Callable[[nn.Module, ModelEntry, LabelledSet], AuditResult]
_AUDITS: dict[str, AuditFn] = {}


def register_audit(task: str) -> Callable[[AuditFn], AuditFn]:
    def add(fn: AuditFn) -> AuditFn:
        _AUDITS[task] = fn
        return fn

    return add


def run_audit(model: nn.Module, entry: ModelEntry, pool: LabelledSet) -> AuditResult | None:
    """The task's audit of ``model`` (None when the task registers none). A failure is recorded, not raised."""
    fn = _AUDITS.get(entry.task)
    if fn is None:
        return None
    try:
        return fn(model, entry, pool)
    except Exception as err:  # noqa: BLE001 - an audit must never cost the trained weights
        log.exception("%s audit failed", entry.task)
        return AuditResult(Audits(actualmed_error=str(err)))


@register_audit("covid")
def actualmed_audit(model: nn.Module, entry: ModelEntry, pool: LabelledSet) -> AuditResult:
    """Metrics and predictions on the Actualmed subset (26 COVID-19 vs 18 normal, one source)."""
    from medmodels.data.shared import covid_samples
    from medmodels.train.pool import decode_all
    from medmodels.train.run import prediction_rows, split_metrics_of, view_probabilities

    ext = covid_samples(external=True)
    tag = "actualmed"
    if pool.samples and pool.samples[0].meta.get("inputs") == "lung_only":  # same inputs as in training
        from medmodels.lungs import lung_only_set

        ext, tag = lung_only_set(ext), "actualmed_lung_only"
    images = decode_all(ext, entry.preprocess, _key(ext, entry, tag))
    probs = view_probabilities(model, images, entry.preprocess)
    labels = np.asarray(ext.labels, dtype=int)
    return AuditResult(Audits(actualmed=split_metrics_of(labels, probs, entry)),
                       prediction_rows(ext, np.arange(len(ext)), probs, "actualmed"))


@register_audit("mortality")
def view_audit(model: nn.Module, entry: ModelEntry, pool: LabelledSet) -> AuditResult:
    return AuditResult(Audits(view_only=view_shortcut(pool)))


def view_shortcut(pool: LabelledSet) -> ViewAudit:
    """How much the X-ray *view* alone says about death (a confounder: supine AP films are taken of
    patients too sick to stand). ROC AUC of the score PA=0 < AP=1 < AP Supine=2 over labelled images."""
    from sklearn.metrics import roc_auc_score

    order = {"PA": 0, "AP": 1, "AP semi erect": 1, "AP Supine": 2}
    died = pool.classes.index("died")
    rows = [(order.get(s.meta.get("view", ""), 1), int(s.label == died), s.meta.get("view", "?"))
            for s in pool.samples if s.label is not None]
    y = np.asarray([r[1] for r in rows])
    x = np.asarray([r[0] for r in rows])
    per_view: dict[str, dict[str, int]] = {}
    for _, lab, view in rows:
        per_view.setdefault(view, {"images": 0, "died": 0})
        per_view[view]["images"] += 1
        per_view[view]["died"] += lab
    return ViewAudit(what="view as the only predictor of death (PA < AP < AP Supine), all labelled images",
                     roc_auc=float(roc_auc_score(y, x)) if 0 < y.sum() < len(y) else None, per_view=per_view)


def _key(pool: LabelledSet, entry: ModelEntry, tag: str) -> str:
    import hashlib

    pre = entry.preprocess
    h = hashlib.sha256(repr((tag, pre.input_size, pre.resize, pre.grayscale)).encode())
    for s in pool.samples:
        h.update(s.name.encode())
    return f"audit_{h.hexdigest()[:16]}"


def source_audit(size: int = 32, seed: int = 42, folds: int = 5, inputs: str = "full") -> SourceAudit:
    """How well the image *source* (NIH vs ieee8023) can be predicted from the model view.

    Logistic regression on the ``covid`` preprocessing (pad to square, grayscale,
    per-image 1st-99th percentile stretch) downsampled to ``size`` px, scored by
    patient-grouped stratified k-fold. Also: the accuracy of the rule "NIH -> normal,
    otherwise COVID-19", which says how much of the label the source alone gives away.
    ``inputs="lung_only"``: on the lung-only X-rays of the issue-19 experiment instead.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medmodels.data.shared import covid_samples
    from medmodels.data.transforms import normalize
    from medmodels.train.pool import decode_all
    from medmodels.zoo.registry import get_entry

    entry = get_entry("covid", "mobilenet_v2")
    entry = dataclasses.replace(entry, preprocess=dataclasses.replace(entry.preprocess, input_size=size))
    pool = covid_samples(external=False)
    tag = f"source_audit_{size}"
    if inputs == "lung_only":
        from medmodels.lungs import lung_only_set

        pool, tag = lung_only_set(pool), f"source_audit_{size}_lung_only"
    images = decode_all(pool, entry.preprocess, _key(pool, entry, tag))
    x = normalize(images, entry.preprocess)[:, 0].flatten(1).numpy()
    source = np.asarray([s.meta.get("dataset") == "nih_cxr14" for s in pool.samples], dtype=int)
    groups = np.asarray([str(s.group) for s in pool.samples])
    labels = np.asarray(pool.labels, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    pred = cross_val_predict(clf, x, source, cv=splitter, groups=groups, method="predict_proba")[:, 1]
    fold_acc = [float(((pred[te] >= 0.5).astype(int) == source[te]).mean())
                for _, te in splitter.split(x, source, groups)]
    normal = pool.classes.index("Normal")
    rule = np.where(source == 1, normal, 1 - normal)
    return SourceAudit(
        what=f"logistic regression (standardised pixels, C=0.01) on {size}x{size} model views "
             "(pad to square, grayscale, per-image percentile stretch), predicting NIH vs ieee8023"
             + (" - on lung-only inputs (cropped to the predicted lung field, black outside)"
                if inputs == "lung_only" else ""),
        n_images=int(len(pool)), n_nih=int(source.sum()), n_ieee8023=int((1 - source).sum()),
        cv=f"StratifiedGroupKFold({folds}) by patient, seed {seed}",
        accuracy_mean=float(np.mean(fold_acc)), accuracy_std=float(np.std(fold_acc)), fold_accuracy=fold_acc,
        balanced_accuracy=float(balanced_accuracy_score(source, (pred >= 0.5).astype(int))),
        roc_auc=float(roc_auc_score(source, pred)),
        label_from_source_rule_accuracy=float((rule == labels).mean()),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_source_audit(weights_dir: Path) -> Path:
    """Fit the image-source classifier and write ``weights/covid/source_audit.json``."""
    result = source_audit()
    path = result.write(Path(weights_dir) / "covid" / SOURCE_AUDIT_FILE)
    log.info("source audit: accuracy %.3f +/- %.3f -> %s", result.accuracy_mean, result.accuracy_std, path)
    return path
