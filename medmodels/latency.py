"""Stored CPU latencies, and which of them can be compared with each other.

Every training run times its model right after training (``inference_ms`` in metrics.json),
but on a shared machine that number depends on what else was running at the time: the
COVID-19 student, trained beside three other jobs, timed at 20.8 ms, and 6.5 ms alone.
Two models are only comparable when they were timed in one process, one after the other.
Two records hold such timings: ``weights/<task>/inference_timing.json`` (every model of a
task, written by ``python -m medmodels report --time``) and ``latency_same_run`` in a
metrics.json (teacher and students, ``python -m medmodels.train.xray --latency``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMING_FILE = "inference_timing.json"
BATCH1 = "ms_per_image_batch1"


def read_timing(weights_dir: Path, task: str) -> dict[str, Any] | None:
    """The task's same-process timing of all its models, if one was written."""
    path = Path(weights_dir) / task / TIMING_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_current(measured: str, metrics: Mapping[str, Any]) -> bool:
    """Whether a timing taken at ``measured`` (ISO, UTC) is of this run's model, not an older one.

    A model re-trained after the timing (perhaps at another input size) makes it stale.
    """
    return str(measured) >= str(metrics.get("created") or "")


@dataclass(frozen=True)
class StoredLatency:
    """Batch-1 CPU milliseconds per image for a set of models, and how they were measured."""

    ms_batch1: dict[str, float | None]
    same_run: bool  # True: all timed in one process, so the numbers compare
    measured: str | None  # ISO time of the same-run timing (None for after-training numbers)


def _same_run_records(task: str, folders: Mapping[str, Path],
                      metrics: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for m in metrics.values():
        same = m.get("latency_same_run")
        if same and same.get("measured"):
            records.append((str(same["measured"]), same.get("models") or {}))
    for folder in {f.parent for f in folders.values()}:
        timing = read_timing(folder.parent, task) if folder.name == task else None
        if timing and timing.get("created"):
            records.append((str(timing["created"]), timing.get("models") or {}))
    return sorted(records, key=lambda r: r[0], reverse=True)


def stored_latency(task: str, folders: Mapping[str, Path],
                   metrics: Mapping[str, Mapping[str, Any]]) -> StoredLatency:
    """The newest same-process timing that covers every model, else each run's own number.

    ``folders`` and ``metrics`` map model name to its weights folder and metrics.json. A
    same-run record counts only if it was measured after every model's training (a model
    re-trained since, perhaps at another input size, makes the record stale).
    """
    for measured, models in _same_run_records(task, folders, metrics):
        if all(is_current(measured, m) and BATCH1 in (models.get(n) or {}) for n, m in metrics.items()):
            return StoredLatency({n: float(models[n][BATCH1]) for n in metrics}, True, measured)
    own = {n: (m.get("inference_ms") or {}).get(BATCH1) for n, m in metrics.items()}
    return StoredLatency(own, False, None)
