"""Batch-norm recalibration: clean statistics, no weight changed, wired into the loop."""
from __future__ import annotations

import torch
from torch import nn

from medmodels.data.transforms import normalize
from medmodels.train.batchnorm import batchnorm_layers, recalibrate_batchnorm
from medmodels.train.loop import FitConfig, TensorData, _calibration_images, fit
from medmodels.zoo import create_model
from medmodels.zoo.registry import Preprocess

PRE = Preprocess(input_size=16)
torch.set_num_threads(1)


class DropoutThenNorm(nn.Module):
    """QuadSNet's pattern in miniature: dropout feeding a batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm2d(4, momentum=0.01)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.drop(self.conv(x))).mean((2, 3)))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def test_statistics_become_those_of_clean_activations_and_weights_stay():
    torch.manual_seed(0)
    model = DropoutThenNorm()
    images = _images(64)
    model.train()
    with torch.no_grad():
        for _ in range(20):  # dropout-inflated running variance, as in training
            model(normalize(images, PRE))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    inflated = model.bn.running_var.clone()

    assert recalibrate_batchnorm(model, images, PRE, batch_size=64) == 1

    with torch.no_grad():
        clean = model.conv(normalize(images, PRE))
    expected_mean = clean.mean((0, 2, 3))
    expected_var = clean.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(model.bn.running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bn.running_var, expected_var, rtol=1e-4, atol=1e-5)
    assert (model.bn.running_var < inflated).all(), "dropout inflates the variance it learns"
    for k, v in weights.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert model.bn.momentum == 0.01 and not model.training


def test_nothing_happens_without_batch_norm_or_images():
    assert recalibrate_batchnorm(nn.Linear(3, 2), _images(4), PRE) == 0
    model = DropoutThenNorm()
    before = model.bn.running_var.clone()
    assert recalibrate_batchnorm(model, _images(1), PRE) == 0
    torch.testing.assert_close(model.bn.running_var, before)


def test_quadsnet_has_a_batch_norm_per_block():
    model = create_model("malaria", "quadsnet")
    assert len(batchnorm_layers(model)) == 16


def test_fit_recalibrates_before_each_validation_when_asked():
    torch.manual_seed(0)
    images, labels = _images(32), torch.arange(32) % 2
    data = TensorData(images, labels)

    def run(n: int) -> nn.Module:
        torch.manual_seed(0)
        model = DropoutThenNorm()
        fit(model, data, data, PRE, FitConfig(epochs=2, batch_size=8, seed=0, recalibrate_bn=n))
        return model

    plain, recalibrated = run(0), run(16)
    assert not torch.allclose(plain.bn.running_var, recalibrated.bn.running_var)
    # the kept checkpoint carries the statistics of its own weights on the calibration subset
    calib = _calibration_images(data, FitConfig(seed=0, recalibrate_bn=16))
    assert calib is not None and len(calib) == 16
    kept_mean = recalibrated.bn.running_mean.clone()
    kept_var = recalibrated.bn.running_var.clone()
    recalibrate_batchnorm(recalibrated, calib, PRE)
    torch.testing.assert_close(recalibrated.bn.running_mean, kept_mean)
    torch.testing.assert_close(recalibrated.bn.running_var, kept_var)


def test_a_recipe_with_recalibration_trains_and_its_card_says_so(tmp_path, monkeypatch):
    from medmodels.train import run as run_mod
    from medmodels.train.recipe import recipe_from_dict

    monkeypatch.setattr(run_mod, "LOG_DIR", tmp_path / "logs")
    recipe = recipe_from_dict({
        "name": "tiny_quadsnet", "task": "malaria", "model": "quadsnet", "data": "synthetic",
        "max_images": 24, "input_size": 16, "epochs": 1, "batch_size": 8, "loss": "margin",
        "recalibrate_bn": 8, "split": {"fractions": [0.5, 0.25, 0.25], "seed": 0},
    })
    out = run_mod.run(recipe, tmp_path / "out")
    assert "re-estimated on 8 training images with dropout off" in (out / "README.md").read_text()
    assert run_mod.reevaluate(out).metrics["accuracy"] is not None
