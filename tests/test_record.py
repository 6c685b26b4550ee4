"""The run record: every shipped record loads and round-trips, and every shipped card agrees with it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from medmodels.latency import TIMING_FILE, TimingRecord
from medmodels.record import SCHEMA_VERSION, RecordError, RunRecord, read_source_audit, record_paths
from medmodels.train.recipe import recipe_of

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
RECORDS = record_paths(WEIGHTS)


def _id(path: Path) -> str:
    return str(path.parent.relative_to(WEIGHTS))


def test_records_are_shipped() -> None:
    assert len(RECORDS) >= 30


@pytest.mark.parametrize("path", RECORDS, ids=_id)
def test_every_shipped_record_loads_and_round_trips(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    record = RunRecord.from_json(text, str(path))
    assert record.schema == SCHEMA_VERSION
    assert record.to_json() == text  # the file is in the canonical form: nothing lost, nothing added
    assert record.test is not None and record.test.n == sum(map(sum, record.test.confusion_matrix))
    recipe = recipe_of(record)
    assert (recipe.task, recipe.name) == (record.task, record.name)


def test_the_migration_has_nothing_left_to_do() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from migrate_run_records import main as migrate

    assert migrate(["--weights", str(WEIGHTS), "--check"]) == 0


def test_side_records_load() -> None:
    for path in sorted(WEIGHTS.glob(f"*/{TIMING_FILE}")):
        timing = TimingRecord.read(path)
        assert timing.models and all(t.ms_per_image_batch1 > 0 for t in timing.models.values())
    audit = read_source_audit(WEIGHTS)
    assert audit is not None and len(audit.fold_accuracy) == 5


def test_a_record_that_does_not_fit_is_refused_with_the_field_named(tmp_path: Path) -> None:
    data = json.loads(RECORDS[0].read_text())
    with pytest.raises(RecordError, match="unknown field"):
        RunRecord.from_dict({**data, "latency_same_run": {}})
    with pytest.raises(RecordError, match="schema version 1"):
        RunRecord.from_dict({**data, "schema": 1})
    bad = {**data, "training": {**data["training"], "seconds": "fast"}}
    with pytest.raises(RecordError, match="training.seconds"):
        RunRecord.from_dict(bad)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        RunRecord.read(tmp_path)


# ------------------------------------------------------------------ model cards


@pytest.mark.parametrize("path", RECORDS, ids=_id)
def test_every_shipped_card_renders_round_trips_and_states_the_record(path: Path) -> None:
    from huggingface_hub import ModelCard

    from medmodels.report.cards import render_card

    folder = path.parent
    record = RunRecord.read(folder)
    text = render_card(record, folder, WEIGHTS)
    assert (folder / "README.md").read_text(encoding="utf-8") == text, "card is stale: python -m medmodels report --cards"
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.pipeline_tag == "image-classification"
    assert data.license == "other" and data.license_name and data.license_link
    assert data.datasets
    assert record.test is not None
    got = {r.metric_type: r.metric_value for r in data.eval_results}
    want = {k: round(float(v), 4) for k, v in record.test.metrics.items()
            if k in ("accuracy", "balanced_accuracy", "f1", "mcc", "roc_auc") and v is not None}
    assert got == want
    assert "## How to use" in card.text and "## Citation" in card.text and "Out of scope" in card.text
    assert f"({record.test.n} images)" in card.text


@pytest.mark.parametrize("folder", ["malaria/shallow_cnn3", "wbc/wbc_cnn", "covid/mobilenet_v2", "mortality/resnet18"])
def test_the_cards_how_to_use_snippet_runs(folder: str, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = (WEIGHTS / folder / "README.md").read_text(encoding="utf-8")
    snippet = text.split("## How to use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(REPO)
    exec(compile(snippet, f"{folder}/README.md", "exec"), {})  # noqa: S102 - our own generated card
    printed = capsys.readouterr().out
    assert printed.startswith("{") and all(c in printed for c in RunRecord.read(WEIGHTS / folder).test.classes)
