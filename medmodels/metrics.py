"""Every metric of the papers, computed from labels and scores with scikit-learn.

One module so that the CLI, the reproduction report and the dashboard report the
same numbers. Everything returned is plain Python (ints, floats, ``None``, lists,
dicts) so it can go straight to JSON or Plotly: an undefined value is ``None``,
never NaN, and a ``notes`` entry says why.

Conventions: ``y_true`` holds class indices into ``classes``; ``probs`` is
``[N, C]`` with columns in the same order. A binary task names the index of its
positive class (the class whose probability is the score).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn import metrics as skm

from medmodels.errors import DatasetError

logger = logging.getLogger(__name__)

Number = float | int | None


# --------------------------------------------------------------------------- helpers


def _num(value: object) -> Number:
    """A numpy or Python number as a JSON-safe Python number; NaN/inf become ``None``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is zero (undefined)."""
    return None if denominator == 0 else float(numerator) / float(denominator)


def _as_labels(y_true: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {labels.shape}.")
    if labels.size == 0:
        raise DatasetError("The labelled set is empty, so no metric can be computed.")
    return labels.astype(np.int64)


def _as_binary(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true).astype(bool).ravel()
    values = np.asarray(scores, dtype=np.float64).ravel()
    if truth.shape != values.shape:
        raise ValueError(f"y_true has {truth.size} entries but scores has {values.size}.")
    if truth.size == 0:
        raise DatasetError("The labelled set is empty, so no curve can be computed.")
    return truth, values


def one_vs_rest(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels (``y_true == k``) and scores (``probs[:, k]``) for class ``k`` against the rest."""
    labels = np.asarray(y_true)
    return (labels == k).astype(np.int64), np.asarray(probs, dtype=np.float64)[:, k]


# --------------------------------------------------------------------------- threshold counts


@dataclass(frozen=True)
class ThresholdCounts:
    """Confusion counts of a binary score at one threshold (positive when score >= threshold)."""

    threshold: float
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn)

    def to_dict(self) -> dict[str, Number]:
        return {
            "threshold": self.threshold,
            "tp": self.tp,
            "tn": self.tn,
            "fp": self.fp,
            "fn": self.fn,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "precision": self.precision,
            "accuracy": self.accuracy,
        }


def confusion_at_threshold(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> ThresholdCounts:
    """TP/TN/FP/FN at ``threshold`` with numpy only, fast enough for a live slider.

    ``y_true`` is truthy for the positive class; a sample is predicted positive when
    ``score >= threshold`` (the same rule as :func:`compute_metrics`).
    """
    truth, values = _as_binary(y_true, scores)
    predicted = values >= threshold
    tp = int(np.count_nonzero(predicted & truth))
    fp = int(np.count_nonzero(predicted & ~truth))
    fn = int(np.count_nonzero(~predicted & truth))
    tn = int(truth.size - tp - fp - fn)
    return ThresholdCounts(threshold=float(threshold), tp=tp, tn=tn, fp=fp, fn=fn)


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class ReliabilityData:
    """A reliability diagram as data: one entry per equal-width bin of confidence.

    Empty bins have ``None`` confidence and accuracy (Plotly draws a gap) and count 0.
    """

    bin_edges: list[float]
    bin_confidence: list[float | None]
    bin_accuracy: list[float | None]
    bin_count: list[int]
    ece: float
    kind: str  # "top_label" or "positive_class"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def reliability_data(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray | Sequence[float], n_bins: int = 10
) -> ReliabilityData:
    """Reliability diagram and expected calibration error (ECE) in equal-width bins.

    - ``probs`` of shape ``[N, C]`` with class-index ``y_true``: top-label calibration
      (confidence = max probability, accuracy = argmax is right), as Guo et al. 2017.
    - ``probs`` of shape ``[N]`` with binary ``y_true``: calibration of the positive-class
      probability (confidence = the probability, accuracy = fraction of positives), as
      ``sklearn.calibration.calibration_curve``.

    ECE = sum over bins of ``|accuracy - confidence| * count / N``. Bins are
    ``[i/n, (i+1)/n)``, the last one closed so that a probability of 1 is counted.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    values = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y_true)
    if values.ndim == 2:
        confidence = values.max(axis=1)
        correct = (values.argmax(axis=1) == labels.astype(np.int64)).astype(np.float64)
        kind = "top_label"
    elif values.ndim == 1:
        confidence = values
        correct = labels.astype(bool).astype(np.float64)
        kind = "positive_class"
    else:
        raise ValueError(f"probs must be [N] or [N, C], got shape {values.shape}.")
    if labels.shape[0] != confidence.shape[0]:
        raise ValueError(f"y_true has {labels.shape[0]} entries but probs has {confidence.shape[0]} rows.")
    if confidence.size == 0:
        raise DatasetError("The labelled set is empty, so no calibration can be computed.")

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    total = confidence.size
    bin_conf: list[float | None] = []
    bin_acc: list[float | None] = []
    ece = 0.0
    for count, c_sum, a_sum in zip(counts, conf_sum, acc_sum):
        if count == 0:
            bin_conf.append(None)
            bin_acc.append(None)
            continue
        mean_conf, mean_acc = float(c_sum / count), float(a_sum / count)
        bin_conf.append(mean_conf)
        bin_acc.append(mean_acc)
        ece += abs(mean_acc - mean_conf) * float(count) / total
    return ReliabilityData(
        bin_edges=[float(e) for e in edges],
        bin_confidence=bin_conf,
        bin_accuracy=bin_acc,
        bin_count=[int(c) for c in counts],
        ece=float(ece),
        kind=kind,
    )


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurveData:
    """A ROC or PR curve as plain lists, ``x`` ascending.

    ROC: ``x`` = FPR, ``y`` = TPR, ``auc`` = trapezoidal ROC AUC.
    PR: ``x`` = recall, ``y`` = precision, ``auc`` = average precision (step-wise, as
    ``sklearn.metrics.average_precision_score``; trapezoids over-estimate PR area).
    ``thresholds[i]`` gives point ``i`` (positive when score >= threshold); the first
    point's threshold is just above the highest score (nothing predicted positive).
    A curve averaged by :func:`mean_curve` has no thresholds and carries the per-point
    standard deviation ``y_std`` and the fold AUCs' standard deviation ``auc_std``.
    When ``y_true`` holds one class only, the curve is undefined: empty lists, ``auc`` None.
    """

    x: list[float]
    y: list[float]
    thresholds: list[float]
    auc: float | None
    y_std: list[float] | None = None
    auc_std: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


def _single_class_note(truth: np.ndarray, what: str) -> str | None:
    if truth.all() or not truth.any():
        only = "positive" if truth.all() else "negative"
        return f"{what} is undefined because every sample is {only}."
    return None


def _first_threshold(values: np.ndarray) -> float:
    """A threshold just above the top score: at it nothing is predicted positive (JSON has no inf)."""
    return float(np.nextafter(values.max(), np.inf))


def roc_curve_data(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> CurveData:
    """ROC curve (FPR, TPR, thresholds) and ROC AUC of a binary score."""
    truth, values = _as_binary(y_true, scores)
    note = _single_class_note(truth, "The ROC curve")
    if note:
        return CurveData(x=[], y=[], thresholds=[], auc=None, notes=(note,))
    fpr, tpr, thresholds = skm.roc_curve(truth, values)
    thresholds = thresholds.astype(np.float64)
    thresholds[0] = _first_threshold(values)
    return CurveData(
        x=fpr.astype(float).tolist(),
        y=tpr.astype(float).tolist(),
        thresholds=thresholds.tolist(),
        auc=float(skm.roc_auc_score(truth, values)),
    )


def pr_curve_data(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> CurveData:
    """Precision-recall curve ordered by increasing recall, and average precision."""
    truth, values = _as_binary(y_true, scores)
    note = _single_class_note(truth, "The precision-recall curve")
    if note:
        return CurveData(x=[], y=[], thresholds=[], auc=None, notes=(note,))
    precision, recall, thresholds = skm.precision_recall_curve(truth, values)
    # sklearn orders by decreasing recall and ends at (recall 0, precision 1) with no threshold.
    all_thresholds = np.concatenate([[_first_threshold(values)], thresholds[::-1].astype(np.float64)])
    return CurveData(
        x=recall[::-1].astype(float).tolist(),
        y=precision[::-1].astype(float).tolist(),
        thresholds=all_thresholds.tolist(),
        auc=float(skm.average_precision_score(truth, values)),
    )


def mean_curve(curves: Sequence[CurveData], grid: np.ndarray | None = None) -> CurveData:
    """Average ROC or PR curves over cross-validation folds on a common ``x`` grid.

    Each fold's ``y`` (TPR for ROC, precision for PR) is linearly interpolated at
    ``grid`` (default 101 points on [0, 1]); the result holds the per-point mean and
    standard deviation. ``auc`` is the mean of the fold AUCs (what the papers report as
    the average AUC), ``auc_std`` their standard deviation. Undefined folds (one class
    only) are left out and named in ``notes``.
    """
    points = np.linspace(0.0, 1.0, 101) if grid is None else np.asarray(grid, dtype=np.float64)
    usable = [c for c in curves if c.x]
    notes: list[str] = []
    if len(usable) < len(curves):
        notes.append(f"{len(curves) - len(usable)} of {len(curves)} folds had one class only and were left out.")
    if not usable:
        notes = notes or ["No curve to average."]
        return CurveData(x=points.tolist(), y=[], thresholds=[], auc=None, notes=tuple(notes))
    stacked = np.vstack([np.interp(points, np.asarray(c.x), np.asarray(c.y)) for c in usable])
    aucs = np.asarray([c.auc for c in usable if c.auc is not None], dtype=np.float64)
    return CurveData(
        x=points.astype(float).tolist(),
        y=stacked.mean(axis=0).astype(float).tolist(),
        thresholds=[],
        auc=float(aucs.mean()) if aucs.size else None,
        y_std=stacked.std(axis=0).astype(float).tolist(),
        auc_std=float(aucs.std()) if aucs.size else None,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class MetricReport:
    """All metrics of one evaluation. ``to_dict()`` is the JSON shape of ``evaluate --json``."""

    metrics: dict[str, Number]
    per_class: dict[str, dict[str, Number]]
    confusion_matrix: list[list[int]]
    classes: tuple[str, ...]
    threshold: float | None
    notes: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return int(sum(sum(row) for row in self.confusion_matrix))

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "metrics": dict(self.metrics),
            "per_class": {name: dict(values) for name, values in self.per_class.items()},
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "classes": list(self.classes),
            "threshold": self.threshold,
        }


def _per_class(
    labels: np.ndarray, predicted: np.ndarray, cm: np.ndarray, classes: Sequence[str]
) -> dict[str, dict[str, Number]]:
    """Precision, recall, F1, support (sklearn) and one-vs-rest specificity of every class."""
    indices = list(range(len(classes)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=np.nan
    )
    total = int(cm.sum())
    table: dict[str, dict[str, Number]] = {}
    for k, name in enumerate(classes):
        fp = int(cm[:, k].sum() - cm[k, k])
        tn = total - int(cm[k, :].sum()) - int(cm[:, k].sum()) + int(cm[k, k])
        table[name] = {
            "precision": _num(precision[k]),
            "recall": _num(recall[k]),
            "f1": _num(f1[k]),
            "support": int(support[k]),
            "specificity": _ratio(tn, tn + fp),
        }
    return table


def _macro(per_class: dict[str, dict[str, Number]], key: str) -> float | None:
    """Mean over classes where ``key`` is defined (as sklearn's ``zero_division=np.nan``)."""
    values = [v[key] for v in per_class.values() if v[key] is not None]
    return float(np.mean(values)) if values else None


def _mcc(labels: np.ndarray, predicted: np.ndarray) -> float:
    """sklearn's MCC; 0 (its convention) when truth and prediction hold one and the same class."""
    with warnings.catch_warnings():
        # sklearn warns about a 1x1 confusion matrix inside matthews_corrcoef; the value is still right
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.matthews_corrcoef(labels, predicted))


def _check_inputs(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> None:
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must have shape [{labels.shape[0]}, C], got {probs.shape}.")
    if probs.shape[1] != len(classes):
        raise ValueError(f"probs has {probs.shape[1]} columns but there are {len(classes)} classes.")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"y_true holds class indices outside 0..{len(classes) - 1}.")


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    positive_index: int | None,
    threshold: float = 0.5,
) -> MetricReport:
    """Every metric of the papers for one labelled set.

    Binary (two classes and ``positive_index`` given): positive when
    ``probs[:, positive_index] >= threshold``; sensitivity, specificity, precision and F1
    are those of the positive class, as in the malaria paper's equations 1-6.
    Otherwise: prediction = argmax; sensitivity, specificity (one-vs-rest per class),
    precision and F1 are macro averages; ROC AUC is macro one-vs-rest and PR AUC macro
    average precision over the classes present. ``ece`` is calibration error of the
    positive-class probability (binary) or of the top label (multi-class).
    """
    labels = _as_labels(y_true)
    values = np.asarray(probs, dtype=np.float64)
    _check_inputs(labels, values, classes)
    n_classes = len(classes)
    binary = positive_index is not None
    if binary and (n_classes != 2 or not 0 <= positive_index < 2):
        raise ValueError(f"positive_index {positive_index} needs exactly two classes, got {n_classes}.")

    if binary:
        negative_index = 1 - positive_index
        predicted = np.where(values[:, positive_index] >= threshold, positive_index, negative_index)
    else:
        predicted = values.argmax(axis=1)
    cm = skm.confusion_matrix(labels, predicted, labels=list(range(n_classes)))
    per_class = _per_class(labels, predicted, cm, classes)
    notes: list[str] = []

    metrics: dict[str, Number] = {
        "n": int(labels.size),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "mcc": _mcc(labels, predicted),
    }
    if binary:
        metrics.update(_binary_metrics(labels, values[:, positive_index], positive_index, cm, notes, classes))
        metrics["ece"] = reliability_data(labels == positive_index, values[:, positive_index]).ece
    else:
        metrics.update(_multiclass_metrics(labels, values, per_class, notes, classes))
        metrics["ece"] = reliability_data(labels, values).ece
    return MetricReport(
        metrics={key: _num(value) for key, value in metrics.items()},
        per_class={name: {k: _num(v) for k, v in row.items()} for name, row in per_class.items()},
        confusion_matrix=[[int(v) for v in row] for row in cm],
        classes=tuple(classes),
        threshold=float(threshold) if binary else None,
        notes=tuple(notes),
    )


def _binary_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    positive_index: int,
    cm: np.ndarray,
    notes: list[str],
    classes: Sequence[str],
) -> dict[str, Number]:
    negative_index = 1 - positive_index
    tp, fn = int(cm[positive_index, positive_index]), int(cm[positive_index, negative_index])
    fp, tn = int(cm[negative_index, positive_index]), int(cm[negative_index, negative_index])
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    fpr, fnr = _ratio(fp, fp + tn), _ratio(fn, fn + tp)
    precision = _ratio(tp, tp + fp)
    truth = labels == positive_index
    present = [r for r in (tpr, tnr) if r is not None]
    out: dict[str, Number] = {
        "balanced_accuracy": float(np.mean(present)),
        "sensitivity": tpr,
        "specificity": tnr,
        "precision": precision,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tpr": tpr,
        "tnr": tnr,
        "fpr": fpr,
        "fnr": fnr,
        "roc_auc": None,
        "pr_auc": None,
    }
    if tpr is None or tnr is None:
        only = classes[positive_index] if tnr is None else classes[negative_index]
        notes.append(
            f"Every sample is {only}: ROC AUC and PR AUC are undefined (None), and so are the rates "
            "that divide by the absent class; balanced accuracy is the rate of the class present."
        )
    else:
        out["roc_auc"] = float(skm.roc_auc_score(truth, scores))
        out["pr_auc"] = float(skm.average_precision_score(truth, scores))
    if precision is None:
        notes.append(
            f"No sample was predicted {classes[positive_index]} at this threshold: precision is undefined (None)."
        )
    return out


def _multiclass_metrics(
    labels: np.ndarray,
    values: np.ndarray,
    per_class: dict[str, dict[str, Number]],
    notes: list[str],
    classes: Sequence[str],
) -> dict[str, Number]:
    present = np.unique(labels)
    out: dict[str, Number] = {
        # mean recall over the classes present in y_true, as sklearn's balanced_accuracy_score
        "balanced_accuracy": float(np.mean([per_class[classes[k]]["recall"] for k in present])),
        "sensitivity": _macro(per_class, "recall"),
        "specificity": _macro(per_class, "specificity"),
        "precision": _macro(per_class, "precision"),
        "f1": _macro(per_class, "f1"),
        "roc_auc": None,
        "pr_auc": None,
    }
    if present.size < 2:
        notes.append(f"Every sample is {classes[int(present[0])]}: ROC AUC and PR AUC are undefined (None).")
        return out
    aucs, aps = [], []
    for k in present:
        truth, scores = one_vs_rest(labels, values, int(k))
        aucs.append(skm.roc_auc_score(truth, scores))
        aps.append(skm.average_precision_score(truth, scores))
    absent = [classes[k] for k in range(len(classes)) if k not in set(present.tolist())]
    if absent:
        notes.append(
            f"No sample of {', '.join(absent)}: left out of the macro ROC AUC and PR AUC, and of the "
            "macro recall and F1 where undefined."
        )
    undefined_precision = [name for name, row in per_class.items() if row["precision"] is None]
    if undefined_precision:
        notes.append(
            f"Nothing was predicted {', '.join(undefined_precision)}: its precision is undefined "
            "and left out of the macro average."
        )
    out["roc_auc"] = float(np.mean(aucs))
    out["pr_auc"] = float(np.mean(aps))
    return out


@dataclass(frozen=True)
class Agreement:
    """How often two models predict the same class, and Cohen's kappa (None when undefined)."""

    n: int
    agreement: float
    cohen_kappa: float | None
    disagreeing: list[int]


def prediction_agreement(pred_a: Sequence[int] | np.ndarray, pred_b: Sequence[int] | np.ndarray,
                         num_classes: int) -> Agreement:
    """Agreement of two models' predicted classes on the same images (teacher vs student...)."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(pred_a, dtype=int), np.asarray(pred_b, dtype=int)
    if a.shape != b.shape:
        raise ValueError(f"predictions differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        return Agreement(0, float("nan"), None, [])
    with warnings.catch_warnings():  # kappa is NaN when both predict a single class
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(a, b, labels=list(range(num_classes))))
    return Agreement(int(a.size), float((a == b).mean()), None if np.isnan(kappa) else kappa,
                     np.flatnonzero(a != b).tolist())
