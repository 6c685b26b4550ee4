"""Distillation: only the student learns, the teacher never changes; the CI recipe runs end to end."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medmodels.train.distill import distill_fit, teacher_logits
from medmodels.train.loop import FitConfig, TensorData
from medmodels.train.recipe import AugmentConfig
from medmodels.zoo.registry import Preprocess

REPO = Path(__file__).resolve().parents[1]
PRE = Preprocess(input_size=8, per_image_norm=True, grayscale=True)


def _tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _data(n: int = 12) -> TensorData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.tensor([i % 2 for i in range(n)])
    return TensorData(images, labels)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


CFG = FitConfig(epochs=1, batch_size=4, lr=1e-2, augment=AugmentConfig(enabled=True, rotation_deg=20),
                balance="oversample")


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_only_student_changes(mode: str) -> None:
    torch.set_num_threads(1)
    student, teacher = _tiny_net(0), _tiny_net(1)
    s0, t0 = _snapshot(student), _snapshot(teacher)
    data = _data()
    kwargs = ({"teacher": teacher} if mode == "online"
              else {"cached_logits": teacher_logits(teacher, data.images, PRE)})
    result = distill_fit(student, data, None, PRE, CFG, temperature=4.0, alpha=0.5, **kwargs)
    assert result.epochs_run == 1
    assert _changed(s0, student)
    assert not _changed(t0, teacher)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_needs_exactly_one_teacher_source() -> None:
    student, teacher = _tiny_net(0), _tiny_net(1)
    with pytest.raises(ValueError):
        distill_fit(student, _data(), None, PRE, CFG, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError):
        distill_fit(student, _data(), None, PRE, CFG, temperature=2.0, alpha=0.5,
                    cached_logits=torch.zeros(3, 2))


def test_tiny_distill_recipe_end_to_end(tmp_path: Path) -> None:
    """The CI recipe on generated images: student weights move, teacher weights do not."""
    from medmodels.train.recipe import load_recipe
    from medmodels.train.run import run
    from medmodels.zoo.registry import build_arch, get_entry

    torch.set_num_threads(1)
    recipe = load_recipe(REPO / "recipes" / "tiny_distill.yaml")
    # A small teacher keeps the test fast; the recipe's own path builds an untrained kd_teacher.
    entry = get_entry("covid", "mobilenet_v2")
    entry = dataclasses.replace(entry, preprocess=dataclasses.replace(entry.preprocess, input_size=32))
    torch.manual_seed(123)
    teacher = build_arch(entry)
    t0 = _snapshot(teacher)
    out = run(recipe, tmp_path / "kd", teacher_model=teacher)
    assert not _changed(t0, teacher)

    from safetensors.torch import load_file

    shipped = load_file(str(out / "model.safetensors"))
    torch.manual_seed(recipe.seed)
    init = build_arch(entry).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in shipped.items() if v.is_floating_point())

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distillation"]["teacher"] == "kd_teacher"
    assert len(metrics["cv"]["folds"]) == 2
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"file", "patient", "label", "score_COVID-19", "score_Normal", "fold"}
    assert {r["fold"] for r in rows} == {"1", "2"}
