"""Turn decoded images into the tensors a model expects, exactly as its ``Preprocess`` says.

One code path serves training, evaluation, the CLI and the dashboard, so that a model is
never shown an image prepared differently from the ones it was trained on (the silent
preprocessing mistake TorchXRayVision's users kept hitting).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from medmodels.zoo.registry import Preprocess


def resize_for_model(img: Image.Image, pre: Preprocess) -> Image.Image:
    """The RGB uint8 image at the model's input size, before normalisation ("model view")."""
    img = img.convert("RGB")
    if pre.grayscale:
        img = ImageOps.grayscale(img).convert("RGB")
    size = (pre.input_size, pre.input_size)
    if pre.resize == "pad_square":
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), (0, 0, 0))
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = canvas
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


model_view = resize_for_model


def to_uint8_tensor(img: Image.Image, pre: Preprocess) -> torch.Tensor:
    """[3, H, W] uint8 tensor of the model view (what training caches in memory)."""
    arr = np.asarray(resize_for_model(img, pre), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def normalize(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 [N,3,H,W] (or float in [0,1]) -> the normalised float tensor the model takes.

    With ``per_image_norm`` each image is first stretched to its own 1st-99th percentile
    range, so that global brightness (a source cue in the X-ray data) carries no signal.
    """
    x = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
    if pre.per_image_norm:
        flat = x.flatten(1)
        lo = torch.quantile(flat, 0.01, dim=1).view(-1, 1, 1, 1)
        hi = torch.quantile(flat, 0.99, dim=1).view(-1, 1, 1, 1)
        x = ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def to_tensor(img: Image.Image, pre: Preprocess) -> torch.Tensor:
    """One image -> normalised [3, H, W] float tensor."""
    return normalize(to_uint8_tensor(img, pre).unsqueeze(0), pre)[0]


def preprocess_batch(images: Sequence[Image.Image], pre: Preprocess) -> torch.Tensor:
    """Images -> normalised [N, 3, H, W] float tensor."""
    if not images:
        return torch.empty(0, pre.channels, pre.input_size, pre.input_size)
    return normalize(torch.stack([to_uint8_tensor(im, pre) for im in images]), pre)
