"""Batched on-the-fly augmentation of in-memory uint8 image tensors.

torchvision's v2 transforms draw one set of random parameters per call, so applied to a
batch they rotate every image by the same angle. Here every image of the batch gets its
own rotation, zoom, shift, flips, brightness, colour gains, saturation and contrast (the
geometry in one ``grid_sample`` call), which is what
Keras' ImageDataGenerator (used by the papers) does and is fast on two CPU cores.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medmodels.train.recipe import AugmentConfig


def _uniform(n: int, half_width: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 2.0 - 1.0) * half_width


def affine_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """[n, 2, 3] sampling matrices: rotation, isotropic zoom, shift and flips per image."""
    angle = _uniform(n, math.radians(cfg.rotation_deg), gen)
    # Zoom in by factor s means sampling a window 1/s as large.
    scale = 1.0 / (1.0 + _uniform(n, cfg.zoom, gen))
    sx = torch.ones(n)
    sy = torch.ones(n)
    if cfg.hflip:
        sx = torch.where(torch.rand(n, generator=gen) < 0.5, -sx, sx)
    if cfg.vflip:
        sy = torch.where(torch.rand(n, generator=gen) < 0.5, -sy, sy)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = _uniform(n, 2.0 * cfg.translate, gen)
    theta[:, 1, 2] = _uniform(n, 2.0 * cfg.translate, gen)
    return theta


def augment_batch(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float [N, C, H, W] in [0, 1], each image transformed on its own.

    Pixels that come from outside the image are black, as in the cell crops' backgrounds.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if not cfg.enabled:
        return x
    n = x.shape[0]
    geometric = cfg.rotation_deg or cfg.zoom or cfg.translate or cfg.hflip or cfg.vflip
    if geometric:
        theta = affine_matrices(n, cfg, gen)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.brightness or cfg.color:
        factor = (1.0 + _uniform(n, cfg.brightness, gen)).view(n, 1, 1, 1)
        if cfg.color:
            channels = x.shape[1]
            factor = factor * (1.0 + _uniform(n * channels, cfg.color, gen)).view(n, channels, 1, 1)
        x = (x * factor).clamp(0.0, 1.0)
    if cfg.saturation or cfg.contrast:
        x = _jitter_saturation_contrast(x, cfg, gen)
    return x


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, [N, 1, H, W] (the image itself when it has one channel)."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _jitter_saturation_contrast(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    if cfg.saturation:
        f = (1.0 + _uniform(n, cfg.saturation, gen)).view(n, 1, 1, 1)
        x = (f * x + (1.0 - f) * _grey(x)).clamp(0.0, 1.0)
    if cfg.contrast:
        f = (1.0 + _uniform(n, cfg.contrast, gen)).view(n, 1, 1, 1)
        x = (f * x + (1.0 - f) * _grey(x).mean(dim=(2, 3), keepdim=True)).clamp(0.0, 1.0)
    return x
