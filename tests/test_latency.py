"""Which stored latencies the Compare page may put side by side (medmodels.latency)."""
from __future__ import annotations

import json
from pathlib import Path

from medmodels.latency import TIMING_FILE, is_current, stored_latency


def _metrics(created: str, ms: float) -> dict:
    return {"created": created, "inference_ms": {"ms_per_image_batch1": ms}}


def _same_run(measured: str) -> dict:
    """A teacher-and-student timing record as ``--latency`` writes it into metrics.json."""
    return {"measured": measured,
            "models": {"a": {"ms_per_image_batch1": 6.5}, "b": {"ms_per_image_batch1": 139.6}}}


def _folders(root: Path, task: str, *names: str) -> dict[str, Path]:
    return {n: root / task / n for n in names}


def test_without_a_same_run_record_each_run_keeps_its_own_number(tmp_path: Path) -> None:
    metrics = {"a": _metrics("2026-01-01T00:00:00+00:00", 20.8),
               "b": _metrics("2026-01-02T00:00:00+00:00", 100.0)}
    got = stored_latency("covid", _folders(tmp_path, "covid", "a", "b"), metrics)
    assert not got.same_run and got.measured is None
    assert got.ms_batch1 == {"a": 20.8, "b": 100.0}


def test_a_same_run_record_in_metrics_replaces_the_after_training_numbers(tmp_path: Path) -> None:
    same = _same_run("2026-01-03T00:00:00+00:00")
    metrics = {"a": {**_metrics("2026-01-01T00:00:00+00:00", 20.8), "latency_same_run": same},
               "b": {**_metrics("2026-01-02T00:00:00+00:00", 100.0), "latency_same_run": same}}
    got = stored_latency("covid", _folders(tmp_path, "covid", "a", "b"), metrics)
    assert got.same_run and got.measured == same["measured"]
    assert got.ms_batch1 == {"a": 6.5, "b": 139.6}


def test_a_record_older_than_a_training_run_is_stale(tmp_path: Path) -> None:
    same = _same_run("2026-01-02T00:00:00+00:00")
    # "a" was re-trained after the timing
    metrics = {"a": {**_metrics("2026-01-05T00:00:00+00:00", 20.8), "latency_same_run": same},
               "b": {**_metrics("2026-01-01T00:00:00+00:00", 100.0), "latency_same_run": same}}
    assert not stored_latency("covid", _folders(tmp_path, "covid", "a", "b"), metrics).same_run


def test_the_task_timing_file_is_used_when_it_covers_both_models(tmp_path: Path) -> None:
    (tmp_path / "malaria").mkdir()
    timing = {"created": "2026-01-04T00:00:00+00:00",
              "models": {"a": {"ms_per_image_batch1": 3.1}, "b": {"ms_per_image_batch1": 27.5}}}
    (tmp_path / "malaria" / TIMING_FILE).write_text(json.dumps(timing))
    metrics = {"a": _metrics("2026-01-01T00:00:00+00:00", 9.0),
               "b": _metrics("2026-01-01T00:00:00+00:00", 40.0)}
    got = stored_latency("malaria", _folders(tmp_path, "malaria", "a", "b"), metrics)
    assert got.same_run and got.ms_batch1 == {"a": 3.1, "b": 27.5}
    # a model the timing file does not list: back to each run's own number
    metrics["c"] = _metrics("2026-01-01T00:00:00+00:00", 5.0)
    got = stored_latency("malaria", _folders(tmp_path, "malaria", "a", "b", "c"), metrics)
    assert not got.same_run and got.ms_batch1["c"] == 5.0


def test_the_shipped_teacher_and_students_compare_from_one_timing() -> None:
    """The shipped COVID-19 folders carry a same-run timing newer than all three trainings."""
    root = Path(__file__).resolve().parents[1] / "weights" / "covid"
    names = ("kd_teacher", "mobilenet_v2", "mobilenet_v2_kd")
    metrics = {n: json.loads((root / n / "metrics.json").read_text()) for n in names}
    got = stored_latency("covid", {n: root / n for n in names}, metrics)
    assert got.same_run
    assert got.ms_batch1["mobilenet_v2_kd"] < got.ms_batch1["kd_teacher"] / 5


def test_the_report_ignores_a_timing_older_than_the_model() -> None:
    from medmodels.report import _timing_of

    timing = {"created": "2026-01-02T00:00:00+00:00", "models": {"a": {"ms_per_image_batch1": 3.0}}}
    assert is_current(timing["created"], {"created": "2026-01-01T00:00:00+00:00"})
    assert _timing_of(_metrics("2026-01-01T00:00:00+00:00", 9.0), timing, "a") == 3.0
    assert _timing_of(_metrics("2026-01-03T00:00:00+00:00", 9.0), timing, "a") == 9.0  # re-trained since
