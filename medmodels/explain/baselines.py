"""Reference images ("absence of signal") in the model's normalised input space.

Integrated Gradients integrates from a baseline; occlusion and the deletion/insertion
curves replace pixels with it. One definition serves all three so that a faithfulness
score measures the same kind of removal the explanation assumed.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torchvision.transforms.functional import gaussian_blur

from medmodels.errors import MedModelsError
from medmodels.zoo.registry import Preprocess

BaselineKind = Literal["black", "blur", "mean"]
BASELINES: dict[str, str] = {
    "black": "black image",
    "blur": "blurred image",
    "mean": "flat image of the image's mean colour",
}


class ExplainError(MedModelsError):
    """An explanation was asked for with settings that cannot work for this model or input."""


def black_value(images: torch.Tensor, pre: Preprocess | None) -> torch.Tensor:
    """Per-channel value of a black pixel after normalisation, shaped [1, C, 1, 1].

    Without a ``Preprocess`` the darkest value of each channel in the batch stands in for
    black (true black whenever the batch holds a black pixel, e.g. slide background).
    """
    c = images.shape[1]
    if pre is None:
        return images.detach().amin(dim=(0, 2, 3)).view(1, c, 1, 1)
    mean = torch.tensor(pre.mean[:c], dtype=images.dtype, device=images.device)
    std = torch.tensor(pre.std[:c], dtype=images.dtype, device=images.device)
    return (-mean / std).view(1, c, 1, 1)


def blur_sigma(size: int) -> float:
    """Blur strong enough to remove cell-scale detail (a twentieth of the side)."""
    return max(1.0, size / 20.0)


def make_baseline(
    images: torch.Tensor, kind: str, pre: Preprocess | None = None
) -> torch.Tensor:
    """Baseline tensor with the shape of ``images`` ([N, C, H, W], normalised)."""
    if kind == "black":
        return black_value(images, pre).expand_as(images).contiguous()
    if kind == "mean":
        return images.detach().mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    if kind == "blur":
        size = min(images.shape[-2:])
        sigma = blur_sigma(size)
        kernel = min(2 * math.ceil(3 * sigma) + 1, size if size % 2 else size - 1)
        return gaussian_blur(images.detach(), [kernel, kernel], [sigma, sigma]).contiguous()
    raise ExplainError(
        f"Unknown baseline {kind!r}; choose one of: {', '.join(BASELINES)}."
    )
