"""One preprocessing path: sizes, padding and per-image normalisation behave as configured."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from medmodels.data.transforms import model_view, preprocess_batch, to_tensor
from medmodels.zoo.registry import Preprocess


def test_squash_and_normalise() -> None:
    pre = Preprocess(input_size=32)
    img = Image.new("RGB", (80, 40), (255, 255, 255))
    x = to_tensor(img, pre)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_pad_square_keeps_aspect_ratio() -> None:
    pre = Preprocess(input_size=40, resize="pad_square")
    img = Image.new("RGB", (80, 40), (255, 255, 255))
    view = np.asarray(model_view(img, pre))
    assert view.shape == (40, 40, 3)
    assert view[:8].max() == 0 and view[-8:].max() == 0 and view[20, 20].min() == 255


def test_per_image_norm_removes_global_brightness() -> None:
    pre = Preprocess(input_size=32, per_image_norm=True, grayscale=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 100, (32, 32)).astype(np.uint8)
    dark = Image.fromarray(base).convert("RGB")
    bright = Image.fromarray((base + 120).astype(np.uint8)).convert("RGB")
    a, b = preprocess_batch([dark, bright], pre)
    assert torch.allclose(a, b, atol=1e-5)
