"""Every shipped cell model reproduces its committed test metrics on its own test split.

This is the contract of metrics.json: the numbers in REPRODUCTION.md and the model cards
are what the committed weights score today, on the slides / original cells the file names.
The full check needs ../shared/data; a clone without it checks the bundled held-out images
(``examples/heldout``, written by ``scripts/bundle_heldout.py`` after the full check passed):
every shipped model must still give the predictions it gave then.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pytest
import torch

from medmodels.data.shared import shared_data_root
from medmodels.record import RunRecord
from medmodels.train.run import reevaluate

REPO = Path(__file__).resolve().parents[1]
KEYS = ("accuracy", "balanced_accuracy", "mcc", "roc_auc", "f1")
HELDOUT = REPO / "examples" / "heldout"
BUNDLED = json.loads((HELDOUT / "predictions.json").read_text())


@pytest.mark.parametrize("key", sorted(BUNDLED["predictions"]))
def test_shipped_weights_give_their_bundled_held_out_predictions(key: str) -> None:
    """Runs without ../shared: a few test-split images and the predictions of the verified weights."""
    from medmodels.data.images import load_image
    from medmodels.data.transforms import preprocess_batch
    from medmodels.hub import load_trained
    from medmodels.inference import predict_proba

    torch.set_num_threads(1)
    task, name = key.split("/")
    rows = BUNDLED["images"][task]
    assert {r["group"] for r in rows} <= set(RunRecord.read(REPO / "weights" / task / name).test_groups()), (
        "the bundled images must come from this model's own test split")
    model, card = load_trained(task, name)
    probs = predict_proba(model, preprocess_batch([load_image(HELDOUT / r["file"]) for r in rows],
                                                  card.entry.preprocess))
    want = np.asarray(BUNDLED["predictions"][key])
    assert (probs.argmax(1) == want.argmax(1)).all()
    assert np.allclose(probs, want, atol=1e-4)


def test_every_shipped_cell_model_has_bundled_predictions() -> None:
    assert {f"{p.parent.name}/{p.name}" for p in _shipped()} == set(BUNDLED["predictions"])


def _shipped() -> list[Path]:
    folders = []
    for task in ("malaria", "wbc"):
        for weights in sorted((REPO / "weights" / task).glob("*/model.safetensors")):
            if (RunRecord.read(weights.parent).recipe or {}).get("data") == "shared":
                folders.append(weights.parent)
    return folders


@pytest.mark.skipif(shared_data_root() is None, reason="../shared/data is not beside the repository")
@pytest.mark.parametrize("folder", _shipped(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_metrics_are_what_the_weights_score(folder: Path) -> None:
    torch.set_num_threads(1)
    stored = RunRecord.read(folder).test_metrics
    again = reevaluate(folder).metrics
    for key in KEYS:
        if key in stored and stored[key] is not None:
            assert again[key] == pytest.approx(stored[key], abs=2e-3), key


def _shipped_covid() -> list[str]:
    names = []
    for weights in sorted((REPO / "weights" / "covid").glob("*/model.safetensors")):
        record = RunRecord.read(weights.parent)
        if (record.recipe or {}).get("split", {}).get("ship") == "fold1":
            names.append(weights.parent.name)
    return names


@pytest.mark.skipif(shared_data_root() is None, reason="../shared/data is not beside the repository")
@pytest.mark.parametrize("name", _shipped_covid())
def test_covid_weights_score_their_held_out_fold_as_committed(name: str) -> None:
    """The path a user takes: `evaluate --data heldout` (library functions, same numbers)."""
    from medmodels.evaluate import evaluate_set, held_out_set
    from medmodels.hub import load_trained

    torch.set_num_threads(1)
    model, card = load_trained("covid", name)
    stored = card.record.test
    result = evaluate_set(model, card.entry, held_out_set(card))
    assert len(result.labels) == stored.n
    for key in ("accuracy", "balanced_accuracy", "roc_auc"):
        assert result.report.metrics[key] == pytest.approx(stored.metrics[key], abs=0.01), key
