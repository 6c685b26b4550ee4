"""``python -m medmodels explain``: one overlay per image and the CSV, with a stand-in model."""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import medmodels.hub
from medmodels.explain import cli
from medmodels.explain.baselines import ExplainError
from medmodels.zoo.registry import build_arch, get_entry

ENTRY = get_entry("malaria", "shallow_cnn1")


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_trained returns a randomly initialised model: no weights needed."""
    torch.manual_seed(0)
    model = build_arch(ENTRY).eval()
    monkeypatch.setattr(
        medmodels.hub, "load_trained", lambda task, name: (model, SimpleNamespace(entry=ENTRY))
    )


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["explain", *argv])


def _write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"cell_{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_explain_command_writes_overlays_and_csv(tmp_path: Path, stand_in: None, method: str) -> None:
    _write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    args = _parse(["--task", "malaria", "--model", "shallow_cnn1", "--method", method,
                   "--ig-steps", "4", "--steps", "4", "--batch-size", "2",
                   str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    table = pd.read_csv(tmp_path / "out" / cli.CSV_NAME)
    assert list(table.columns[:7]) == ["file", "predicted_class", "probability", "method",
                                       "deletion_auc", "insertion_auc", "random_deletion_auc"]
    assert len(table) == 3 and (table["method"] == method).all()
    assert set(table["predicted_class"]) <= set(ENTRY.classes)
    assert table[["probability", "deletion_auc", "insertion_auc"]].notna().all().all()
    overlays = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert overlays == [f"cell_{i}_{method}.png" for i in range(3)]
    with Image.open(tmp_path / "out" / overlays[0]) as im:
        assert im.size == (ENTRY.preprocess.input_size,) * 2


def test_explain_command_errors(tmp_path: Path, stand_in: None) -> None:
    args = _parse(["--task", "malaria", "--model", "shallow_cnn1", str(tmp_path / "missing.png"),
                   "--out", str(tmp_path / "out")])
    with pytest.raises(ExplainError, match="no such file"):
        cli.run(args)
    [image] = _write_images(tmp_path, 1)
    args = _parse(["--task", "malaria", "--model", "shallow_cnn1", "--target", "Healthy",
                   str(image), "--out", str(tmp_path / "out")])
    with pytest.raises(ExplainError, match="Unknown target class 'Healthy'"):
        cli.run(args)
