"""Which stored latencies the Compare page may put side by side (medmodels.latency)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from medmodels.latency import TIMING_FILE, ModelTiming, TimingRecord, is_current, stored_latency, timing_of
from medmodels.record import InferenceTime, RunRecord

REPO = Path(__file__).resolve().parents[1]


def _run(created: str, ms: float, name: str = "a") -> RunRecord:
    # only the fields the latency rules read
    return SimpleNamespace(name=name, created=created,  # type: ignore[return-value]
                           inference_ms=InferenceTime(threads=1, ms_per_image_batch1=ms))


def _timing(root: Path, task: str, created: str, **ms: float) -> None:
    TimingRecord(task=task, threads=1, torch="x", created=created,
                 models={n: ModelTiming(v) for n, v in ms.items()}).write(root / task / TIMING_FILE)


def test_without_a_timing_record_each_run_keeps_its_own_number(tmp_path: Path) -> None:
    records = {"a": _run("2026-01-01T00:00:00+00:00", 20.8), "b": _run("2026-01-02T00:00:00+00:00", 100.0)}
    got = stored_latency("covid", tmp_path, records)
    assert not got.same_run and got.measured is None
    assert got.ms_batch1 == {"a": 20.8, "b": 100.0}


def test_the_task_timing_replaces_the_after_training_numbers(tmp_path: Path) -> None:
    _timing(tmp_path, "covid", "2026-01-03T00:00:00+00:00", a=6.5, b=139.6)
    records = {"a": _run("2026-01-01T00:00:00+00:00", 20.8), "b": _run("2026-01-02T00:00:00+00:00", 100.0)}
    got = stored_latency("covid", tmp_path, records)
    assert got.same_run and got.measured == "2026-01-03T00:00:00+00:00"
    assert got.ms_batch1 == {"a": 6.5, "b": 139.6}


def test_a_timing_older_than_a_training_run_is_stale(tmp_path: Path) -> None:
    _timing(tmp_path, "covid", "2026-01-02T00:00:00+00:00", a=6.5, b=139.6)
    records = {"a": _run("2026-01-05T00:00:00+00:00", 20.8), "b": _run("2026-01-01T00:00:00+00:00", 100.0)}
    assert not stored_latency("covid", tmp_path, records).same_run


def test_a_model_the_timing_does_not_list_falls_back_to_each_run(tmp_path: Path) -> None:
    _timing(tmp_path, "malaria", "2026-01-04T00:00:00+00:00", a=3.1, b=27.5)
    records = {n: _run("2026-01-01T00:00:00+00:00", 9.0) for n in ("a", "b", "c")}
    got = stored_latency("malaria", tmp_path, records)
    assert not got.same_run and got.ms_batch1["c"] == 9.0


def test_the_shipped_teacher_and_students_compare_from_one_timing() -> None:
    """The covid timing record is newer than all three trainings and covers them."""
    names = ("kd_teacher", "mobilenet_v2", "mobilenet_v2_kd")
    records = {n: RunRecord.read(REPO / "weights" / "covid" / n) for n in names}
    got = stored_latency("covid", REPO / "weights", records)
    assert got.same_run
    assert got.ms_batch1["mobilenet_v2_kd"] < got.ms_batch1["kd_teacher"] / 5


def test_the_report_ignores_a_timing_older_than_the_model() -> None:
    timing = TimingRecord(task="malaria", threads=1, torch="x", created="2026-01-02T00:00:00+00:00",
                          models={"a": ModelTiming(3.0)})
    assert is_current(timing.created, "2026-01-01T00:00:00+00:00")
    assert timing_of(_run("2026-01-01T00:00:00+00:00", 9.0), timing) == 3.0
    assert timing_of(_run("2026-01-03T00:00:00+00:00", 9.0), timing) == 9.0  # re-trained since
