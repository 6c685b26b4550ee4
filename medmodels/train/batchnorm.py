"""Re-estimate batch-norm statistics on clean training images (dropout off).

Why: QuadSNet puts dropout after every block, so each batch norm but the first learns its
running mean and variance on dropout-scaled activations that evaluation never produces, and
the paper's momentum (0.01 in PyTorch terms) makes those statistics lag many batches behind
weights that change quickly. In eval mode the network then sees shifted activations and
collapses to one class. Re-estimating the statistics with dropout off, on a fixed subset of
the training images, before every validation (and so in every saved checkpoint) removes
both effects without touching a learned weight.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from medmodels.data.transforms import normalize
from medmodels.zoo.registry import Preprocess

log = logging.getLogger(__name__)

_BN = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, images: torch.Tensor, pre: Preprocess, batch_size: int = 64
) -> int:
    """Replace every batch norm's running statistics by their average over ``images``.

    ``images`` are uint8 [N, C, H, W] at the model's input size. Batch norms run in training
    mode with a cumulative average (momentum None) while every other module, dropout
    included, stays in eval mode; learned weights are not changed. The model is left in
    eval mode. Returns the number of layers recalibrated (0: nothing to do).
    """
    layers = batchnorm_layers(model)
    if not layers or len(images) < 2:
        return 0
    model.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
        m.train()
    try:
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size]
            if len(batch) < 2:
                continue  # batch norm needs more than one value per channel
            model(normalize(batch, pre))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
            m.eval()
    log.debug("recalibrated %d batch-norm layers on %d images", len(layers), len(images))
    return len(layers)
