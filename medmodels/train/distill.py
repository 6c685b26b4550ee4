"""Knowledge distillation (KD paper): train a student against a frozen teacher's soft targets.

The engine's ``fit`` hands its loss only the batch tensors, not which samples they are, so
it cannot look up teacher logits computed in advance. On a 2-core CPU the teacher
(VGG19 + ResNet50V2, ~47M parameters) costs about 0.3 s per 128 px image, which would
triple the student's epoch if it ran on every augmented batch. Hence two modes:

- ``cached``: the teacher's logits are computed once on the un-augmented images; each
  student batch is compared with the logits of its own (un-rotated) images. The
  augmentation here is a mild rotation (0-20 degrees), under which the teacher's
  prediction barely moves, so this is a documented approximation.
- ``online``: the teacher runs on the very batch the student sees (the paper's setting).

Only the student's parameters are given to the optimiser, and the teacher is frozen
(``requires_grad=False``, eval mode), so the teacher cannot change.
"""
from __future__ import annotations

import logging
import sys
from typing import IO, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from medmodels.data.transforms import normalize
from medmodels.train.loop import FitConfig, FitResult, LossFn, TensorData, ce_loss, fit
from medmodels.train.losses import distillation_loss
from medmodels.zoo.registry import Preprocess

log = logging.getLogger(__name__)

TeacherMode = Literal["cached", "online"]


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher must never be updated."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, pre: Preprocess, batch_size: int = 32,
                   progress: IO[str] | None = None) -> torch.Tensor:
    """The frozen teacher's logits [N, C] for uint8 images (un-augmented), in batches."""
    freeze(teacher)
    out = []
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc="teacher logits", file=progress or sys.stderr, mininterval=10.0, ncols=100):
        out.append(teacher(normalize(images[i : i + batch_size], pre)).float())
    return torch.cat(out) if out else torch.empty(0)


def distill_fit(
    student: nn.Module,
    train: TensorData,
    val: TensorData | None,
    pre: Preprocess,
    cfg: FitConfig,
    *,
    temperature: float,
    alpha: float,
    cached_logits: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    class_weights: torch.Tensor | None = None,
    val_loss_fn: LossFn | None = None,
    progress: IO[str] | None = None,
) -> FitResult:
    """Train ``student`` in place with the distillation loss; keep its best epoch by val loss.

    Give ``cached_logits`` (aligned with ``train``) for the cached mode, or ``teacher`` for
    the online mode. The validation loss that picks the best epoch is plain cross-entropy
    on the labels (comparable with the student trained alone). Balancing, augmentation,
    early stopping and the wall-clock budget follow ``cfg`` as in the engine's ``fit``.
    """
    if (cached_logits is None) == (teacher is None):
        raise ValueError("give exactly one of cached_logits (cached mode) or teacher (online mode)")
    if cached_logits is not None and len(cached_logits) != len(train):
        raise ValueError("cached_logits must have one row per training image")
    if teacher is not None:
        freeze(teacher)
    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        if cached_logits is not None:
            t_logits = cached_logits[torch.as_tensor(idx)]
        else:
            with torch.no_grad():
                t_logits = teacher(x)  # type: ignore[misc]
        return distillation_loss(logits, t_logits, y, temperature, alpha, class_weights=class_weights)

    return fit(student, train, val, pre, cfg, loss, val_loss_fn or ce_loss(), progress)
