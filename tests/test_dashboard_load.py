"""bench/load.py: a tiny bounded run, and its RESULTS.md editing that leaves other sections alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def load_module():  # noqa: ANN201 - the bench/load.py module
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)
    return module


def test_library_phase_runs_bounded_and_error_free(load_module, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import streamlit as st
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("MEDMODELS_WEIGHTS_DIR", str(tmp_path))
    st.cache_resource.clear()
    run, info = load_module.library_phase(users=3, total=9, deadline_s=60, weights_dir=tmp_path)
    st.cache_resource.clear()
    summary = run.summary()
    assert summary["requests"] == 9 and summary["errors"] == 0
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["max_ms"]
    assert info["models"] and "untrained" in info["weights"]
    assert summary["rss_mb_last"] > 0


def test_drive_counts_errors_and_stops_at_the_deadline(load_module) -> None:  # noqa: ANN001
    def job(_user: int, i: int) -> None:
        if i % 2:
            raise ValueError("odd")

    run = load_module.drive(load_module.Run("test", 2), 10, 30.0, job)
    assert len(run.latencies) == 5 and len(run.errors) == 5
    assert run.summary()["first_error"] == "ValueError: odd"
    slow = load_module.drive(
        load_module.Run("slow", 1), 1000, 0.2, lambda _u, _i: __import__("time").sleep(0.05)
    )
    assert len(slow.latencies) < 1000


def test_write_section_replaces_only_the_load_section(load_module, tmp_path) -> None:  # noqa: ANN001
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmarks\n\n## Explanations\n\nkeep me\n\n## Load\n\nold numbers\n")
    load_module.write_section("## Load\n\nnew numbers\n", results)
    text = results.read_text()
    assert "keep me" in text and "new numbers" in text and "old numbers" not in text
    fresh = tmp_path / "NEW.md"
    load_module.write_section("## Load\n\nfirst\n", fresh)
    assert fresh.read_text().startswith("# Benchmarks") and "first" in fresh.read_text()
    results.write_text("# Benchmarks\n\n## Load\n\nold\n\n## Explanations\n\nafter\n")
    load_module.write_section("## Load\n\nnew\n", results)
    assert results.read_text().index("new") < results.read_text().index("## Explanations")
    assert "after" in results.read_text()
