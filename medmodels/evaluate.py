"""Evaluate a model on a labelled set: probabilities, metrics and a per-image table."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from medmodels.data.images import WORK_SIDE, load_image
from medmodels.data.samples import LabelledSet
from medmodels.errors import DatasetError
from medmodels.inference import predict_in_batches
from medmodels.zoo.registry import ModelEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """Everything a report or the dashboard needs about one model on one labelled set."""

    entry: ModelEntry
    names: list[str]
    groups: list[str | None]
    labels: np.ndarray
    probs: np.ndarray
    report: object  # medmodels.metrics.MetricReport

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
    probs = predict_in_batches(
        model, entry, lambda i: load_image(samples[i].source, samples[i].name, max_side=WORK_SIDE), len(samples),
        batch_size=batch_size, progress=progress,
    )
    labels = np.asarray([s.label for s in samples], dtype=int)
    report = compute_metrics(labels, probs, entry.classes, entry.task_spec.positive_index, threshold)
    log.info("evaluated %s on %d images", entry.key, len(samples))
    return Evaluation(entry, [s.name for s in samples], [s.group for s in samples], labels, probs, report)


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
