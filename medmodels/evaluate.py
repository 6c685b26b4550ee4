"""Evaluate a model on a labelled set: probabilities, metrics and a per-image table."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from medmodels.data.images import WORK_SIDE, load_image
from medmodels.data.samples import LabelledSet, Sample
from medmodels.errors import DatasetError
from medmodels.inference import predict_in_batches
from medmodels.zoo.registry import ModelEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Curves:
    """The one-vs-rest curves of one class and, for a binary task, the operating point of the
    evaluation's threshold on each (``None`` where undefined, e.g. no positives)."""

    label: str
    roc: object  # medmodels.metrics.CurveData
    pr: object  # medmodels.metrics.CurveData
    reliability: object  # medmodels.metrics.ReliabilityData
    roc_point: tuple[float, float] | None = None  # (FPR, TPR)
    pr_point: tuple[float, float] | None = None  # (recall, precision)


@dataclass(frozen=True)
class Evaluation:
    """Everything a report or the dashboard needs about one model on one labelled set.

    The probabilities are the measurement; ``report`` holds the metrics at one threshold and
    ``at(threshold)`` gives the same evaluation at another without predicting again.
    """

    entry: ModelEntry
    names: list[str]
    groups: list[str | None]
    labels: np.ndarray
    probs: np.ndarray
    report: object  # medmodels.metrics.MetricReport

    def __reduce__(self) -> tuple:
        """Pickled with the model's registry key (a ``ModelEntry`` holds read-only mappings that
        do not pickle), so that caches such as the dashboard's can store evaluations."""
        return (_restore, (self.entry.task, self.entry.name, self.names, self.groups, self.labels,
                           self.probs, self.report))

    @property
    def binary(self) -> bool:
        return self.entry.task_spec.positive_index is not None

    def at(self, threshold: float) -> Evaluation:
        """The operating point at ``threshold`` (on the positive class's probability): the same
        probabilities with the confusion matrix and metrics recomputed (ignored when multi-class,
        where the prediction is the arg-max)."""
        from medmodels.metrics import compute_metrics

        spec = self.entry.task_spec
        report = compute_metrics(self.labels, self.probs, self.entry.classes, spec.positive_index, threshold)
        return replace(self, report=report)

    def curves(self, k: int | None = None) -> Curves:
        """ROC, precision-recall and reliability of class ``k`` against the rest (default: the
        positive class), with the binary operating point of ``report`` marked on ROC and PR."""
        from medmodels.metrics import one_vs_rest, pr_curve_data, reliability_data, roc_curve_data

        positive = self.entry.task_spec.positive_index
        k = positive if k is None else k
        if k is None:
            raise ValueError("A multi-class evaluation needs the class index of its one-vs-rest curves.")
        truth, scores = one_vs_rest(self.labels, self.probs, k)
        reliability = reliability_data(truth, scores) if self.binary else reliability_data(self.labels, self.probs)
        m = self.report.metrics  # type: ignore[attr-defined]
        roc_point = pr_point = None
        if self.binary and m.get("fpr") is not None and m.get("tpr") is not None:
            roc_point = (m["fpr"], m["tpr"])
            if m.get("precision") is not None:
                pr_point = (m["tpr"], m["precision"])
        return Curves(self.entry.classes[k], roc_curve_data(truth, scores), pr_curve_data(truth, scores),
                      reliability, roc_point, pr_point)

    def per_image_rows(self) -> list[dict[str, object]]:
        """One row per image, most confident mistakes first."""
        classes = self.entry.classes
        pred = self.probs.argmax(1)
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, object] = {
                "file": name,
                "group": self.groups[i],
                "label": classes[int(self.labels[i])],
                "predicted": classes[int(pred[i])],
                "correct": bool(pred[i] == self.labels[i]),
                "confidence": float(self.probs[i, pred[i]]),
            }
            row.update({f"p_{c}": float(self.probs[i, k]) for k, c in enumerate(classes)})
            rows.append(row)
        rows.sort(key=lambda r: (r["correct"], -float(r["confidence"])))
        return rows


def _restore(task: str, name: str, *fields: object) -> Evaluation:
    from medmodels.zoo.registry import get_entry

    return Evaluation(get_entry(task, name), *fields)  # type: ignore[arg-type]


def evaluate_set(
    model: nn.Module,
    entry: ModelEntry,
    data: LabelledSet,
    *,
    batch_size: int = 32,
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    from medmodels.metrics import compute_metrics

    samples = [s for s in data.samples if s.label is not None]
    if not samples:
        raise DatasetError("The labelled set has no labelled images to evaluate.")
    if tuple(data.classes) != tuple(entry.classes):
        raise DatasetError(
            f"The set's classes {list(data.classes)} are not the model's {list(entry.classes)}."
        )
    unique, rows = distinct_samples(samples)
    probs = predict_in_batches(
        model, entry, lambda i: load_image(unique[i].source, unique[i].name, max_side=WORK_SIDE), len(unique),
        batch_size=batch_size, progress=progress,
    )[rows]
    labels = np.asarray([s.label for s in samples], dtype=int)
    report = compute_metrics(labels, probs, entry.classes, entry.task_spec.positive_index, threshold)
    log.info("evaluated %s on %d images (%d distinct)", entry.key, len(samples), len(unique))
    return Evaluation(entry, [s.name for s in samples], [s.group for s in samples], labels, probs, report)


def distinct_samples(samples: list[Sample]) -> tuple[list[Sample], np.ndarray]:
    """The samples with identical files kept once, and for each sample the row of its file:
    a zip of 5,000 copies of one tiny image costs one prediction, not 5,000."""
    import hashlib

    rows: dict[str, int] = {}
    unique: list[Sample] = []
    index = []
    for sample in samples:
        source = sample.source
        key = hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else f"path:{source}"
        if key not in rows:
            rows[key] = len(unique)
            unique.append(sample)
        index.append(rows[key])
    return unique, np.asarray(index, dtype=int)


def held_out_set(card: object) -> LabelledSet:
    """The test split a shipped model was scored on, rebuilt from its run record.

    The record stores the group ids (patients, slides, original cells) of each split part;
    the test set is every image of the shared data whose group is in the test part.
    """
    from medmodels.data.shared import shared_samples

    record = card.record  # type: ignore[attr-defined]
    groups = record.test_groups() if record is not None else []
    if not groups:
        raise DatasetError(
            f"{card.entry.key} records no test split in its metrics.json; "  # type: ignore[attr-defined]
            "pass --data with a labelled set instead."
        )
    wanted = set(map(str, groups))
    pool = shared_samples(card.entry.task)  # type: ignore[attr-defined]
    samples = [s for s in pool.samples if str(s.group) in wanted and s.label is not None]
    return LabelledSet(samples, pool.classes)
