"""Stored CPU latencies: the timing record, how it is measured, and which numbers compare.

Every training run times its model right after training (``RunRecord.inference_ms``), but
on a shared machine that number depends on what else was running at the time: the
COVID-19 student, trained beside three other jobs, timed at 20.8 ms, and 6.5 ms alone.
Two models are only comparable when they were timed in one process, one after the other.
Such a timing is its own record, :class:`TimingRecord` in
``weights/<task>/inference_timing.json`` (``python -m medmodels report --time TASK``); it
never rewrites a run's metrics.json.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from medmodels.record import MachineInfo, _decode_dataclass, read_json_file, to_json

if TYPE_CHECKING:
    from medmodels.record import RunRecord

log = logging.getLogger(__name__)

TIMING_FILE = "inference_timing.json"


@dataclass
class ModelTiming:
    """Median CPU milliseconds per image of one model; its parameter count when it was loaded trained."""

    ms_per_image_batch1: float
    ms_per_image_batch32: float | None = None
    parameters: int | None = None


@dataclass
class TimingRecord:
    """Every listed model timed in one process, in turn (``architecture_only``: random weights)."""

    task: str
    threads: int
    torch: str
    created: str
    models: dict[str, ModelTiming]
    architecture_only: list[str] = field(default_factory=list)
    machine: MachineInfo | None = None

    @classmethod
    def read(cls, path: Path | str) -> TimingRecord:
        return _decode_dataclass(cls, read_json_file(Path(path), "timing record"), Path(path).name)

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_json(self), encoding="utf-8")
        return path

    def batch1(self, name: str) -> float | None:
        t = self.models.get(name)
        return None if t is None else t.ms_per_image_batch1

    def ratio_batch1(self, name: str, reference: str) -> float | None:
        """``name``'s batch-1 time over ``reference``'s (None when either is missing)."""
        a, b = self.batch1(name), self.batch1(reference)
        return None if a is None or not b else a / b

    def parameter_reduction(self, name: str, reference: str) -> float | None:
        a, b = self.models.get(name), self.models.get(reference)
        if a is None or b is None or a.parameters is None or not b.parameters:
            return None
        return 1.0 - a.parameters / b.parameters


def read_timing(weights_dir: Path, task: str) -> TimingRecord | None:
    """The task's same-process timing of its models, if one was written."""
    path = Path(weights_dir) / task / TIMING_FILE
    return TimingRecord.read(path) if path.is_file() else None


def is_current(measured: str, created: str | None) -> bool:
    """Whether a timing taken at ``measured`` (ISO, UTC) is of a run created at ``created``, not an older one.

    A model re-trained after the timing (perhaps at another input size) makes it stale.
    """
    return str(measured) >= str(created or "")


def timing_of(record: RunRecord, timing: TimingRecord | None) -> float | None:
    """Batch-1 ms of a run: the same-process timing if current, else the run's own after-training number."""
    if timing is not None and record.name in timing.models and is_current(timing.created, record.created):
        return timing.models[record.name].ms_per_image_batch1
    return record.inference_ms.ms_per_image_batch1 if record.inference_ms else None


@dataclass(frozen=True)
class StoredLatency:
    """Batch-1 CPU milliseconds per image for a set of models, and how they were measured."""

    ms_batch1: dict[str, float | None]
    same_run: bool  # True: all timed in one process, so the numbers compare
    measured: str | None  # ISO time of the same-run timing (None for after-training numbers)


def stored_latency(task: str, weights_dir: Path | None, records: Mapping[str, RunRecord]) -> StoredLatency:
    """The task's same-process timing if it covers every model and is newer than each training, else each run's own number."""
    timing = read_timing(weights_dir, task) if weights_dir is not None else None
    if timing is not None and all(
        is_current(timing.created, r.created) and n in timing.models for n, r in records.items()
    ):
        return StoredLatency({n: timing.models[n].ms_per_image_batch1 for n in records}, True, timing.created)
    own = {n: (r.inference_ms.ms_per_image_batch1 if r.inference_ms else None) for n, r in records.items()}
    return StoredLatency(own, False, None)


def time_task_models(weights_dir: Path | str, task: str, threads: int = 1,
                     batch_sizes: Sequence[int] = (1, 32), rounds: int = 3) -> Path:
    """Time every trained model of ``task`` in this one process; write ``<task>/inference_timing.json``.

    The models are timed in turn, ``rounds`` rounds interleaved, and the median kept, so that
    a background load affects them alike. Registered architectures without weights here are
    timed at random initialisation and listed under ``architecture_only``.
    """
    import numpy as np
    import torch

    from medmodels.hub import HubSettings, load_trained
    from medmodels.inference import time_inference
    from medmodels.zoo.registry import count_parameters, create_model, list_models

    weights_dir = Path(weights_dir)
    torch.set_num_threads(threads)
    settings = HubSettings(weights_dir=weights_dir)
    models, parameters = {}, {}
    for folder in sorted((weights_dir / task).glob("*/model.safetensors")):
        model, card = load_trained(task, folder.parent.name, settings)
        models[folder.parent.name] = (model, card.entry.preprocess)
        parameters[folder.parent.name] = count_parameters(model)
    # Latency does not depend on the weights: time the registered architectures that have
    # none here too, so that a shallow-vs-deep comparison never silently loses a side.
    architecture_only = []
    for entry in list_models(task):
        if entry.name not in models:
            models[entry.name] = (create_model(task, entry.name).eval(), entry.preprocess)
            architecture_only.append(entry.name)
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in models}
    for _ in range(rounds):
        for name, (model, pre) in models.items():
            samples[name].append(time_inference(model, pre, batch_sizes=batch_sizes))
    record = TimingRecord(
        task=task, threads=threads, torch=torch.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        models={n: ModelTiming(**{k: float(np.median([s[k] for s in v])) for k in v[0]},
                               parameters=parameters.get(n))
                for n, v in samples.items() if v},
        architecture_only=architecture_only,
        machine=MachineInfo.current(),
    )
    out = record.write(weights_dir / task / TIMING_FILE)
    log.info("timed %d %s models -> %s", len(models), task, out)
    return out
