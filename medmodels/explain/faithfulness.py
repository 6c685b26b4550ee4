"""Deletion and insertion curves: does removing the pixels a map ranks first hurt the model?

Pixels are removed (deletion: image -> baseline) or added (insertion: baseline -> image) in
the order of the map, in ``steps`` equal portions, and the target's probability is recorded
after each (Petsiuk et al., RISE, 2018). A faithful map gives a low deletion AUC and a high
insertion AUC; the same curves with a random pixel order are the reference a map must beat.
Ties in a map (flat regions of an upsampled CAM) are broken by that same random order, so
a constant map scores exactly like the random one.
All steps of all images go through the model in batches of ``batch_size``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medmodels.explain.baselines import ExplainError, make_baseline
from medmodels.explain.guard import model_guard
from medmodels.zoo.registry import Preprocess


@dataclass(frozen=True)
class FaithfulnessResult:
    """Per-image AUCs ([N]) and the curves ([N, steps + 1]) over ``fractions``."""

    fractions: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    random_deletion_curve: np.ndarray
    random_insertion_curve: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    random_deletion_auc: np.ndarray
    random_insertion_auc: np.ndarray
    baseline: str


def _ranks(order_keys: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Rank of every pixel (0 = removed first): by descending map, ties in random order."""
    n, p = order_keys.shape
    ranks = np.empty((n, p), dtype=np.int64)
    for i in range(n):
        order = np.lexsort((tie_break[i], -order_keys[i]))
        ranks[i, order] = np.arange(p)
    return ranks


def _probabilities(
    model: nn.Module,
    images: torch.Tensor,
    baseline: torch.Tensor,
    ranks: torch.Tensor,
    counts: torch.Tensor,
    target: torch.Tensor,
    insertion: bool,
    batch_size: int,
) -> torch.Tensor:
    """Target probability for every (image, step): [N, steps + 1]."""
    n, _c, h, w = images.shape
    steps = counts.numel()
    jobs = [(i, k) for i in range(n) for k in range(steps)]
    probs = torch.empty(n, steps)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        idx = torch.tensor([i for i, _ in chunk])
        ks = torch.tensor([k for _, k in chunk])
        removed = (ranks[idx] < counts[ks].view(-1, 1)).view(-1, 1, h, w).to(images.dtype)
        keep = removed if insertion else 1.0 - removed
        batch = images[idx] * keep + baseline[idx] * (1.0 - keep)
        logits = model(batch)
        p = torch.softmax(logits.float(), dim=1).gather(1, target[idx].view(-1, 1))[:, 0]
        probs[idx, ks] = p.cpu()
    return probs


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    target: int | np.ndarray | torch.Tensor | None,
    *,
    steps: int = 20,
    baseline: str = "black",
    random_seed: int = 0,
    preprocess: Preprocess | None = None,
    batch_size: int = 64,
) -> FaithfulnessResult:
    """Deletion/insertion curves and AUCs of ``maps`` ([N, H, W]) for ``target``.

    ``target`` None: the class the model predicts for each unaltered image.

    ``baseline`` replaces removed pixels, as for Integrated Gradients; ``preprocess`` says
    what black is after normalisation (without it, the batch's darkest value per channel).
    """
    n, _c, h, w = images.shape
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape != (n, h, w):
        raise ExplainError(f"Maps of shape {maps.shape} do not match images of shape {tuple(images.shape)}.")
    if steps < 1:
        raise ExplainError(f"steps must be at least 1, got {steps}.")
    if target is None:
        with model_guard(model), torch.no_grad():
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            target = model(images.detach().to(device, torch.float32)).argmax(dim=1).cpu()
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    t = t.expand(n).clone() if t.numel() == 1 else t
    if t.numel() != n:
        raise ExplainError(f"Got {t.numel()} target classes for {n} images.")
    p = h * w
    rng = np.random.default_rng(random_seed)
    tie_break = np.stack([rng.permutation(p) for _ in range(n)])
    ranks_map = _ranks(np.nan_to_num(maps.reshape(n, p)), tie_break)
    ranks_random = _ranks(np.zeros((n, p)), tie_break)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.from_numpy(np.round(fractions * p).astype(np.int64))
    with model_guard(model), torch.no_grad():
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = images.detach().to(device, torch.float32)
        base = make_baseline(x, baseline, preprocess)
        curves = {}
        for name, ranks in (("map", ranks_map), ("random", ranks_random)):
            r = torch.from_numpy(ranks).to(device)
            for insertion in (False, True):
                curves[(name, insertion)] = _probabilities(
                    model, x, base, r, counts.to(device), t.to(device), insertion, batch_size
                ).numpy()

    def auc(curve: np.ndarray) -> np.ndarray:
        return np.trapezoid(curve, fractions, axis=1).astype(np.float32)

    return FaithfulnessResult(
        fractions=fractions.astype(np.float32),
        deletion_curve=curves[("map", False)],
        insertion_curve=curves[("map", True)],
        random_deletion_curve=curves[("random", False)],
        random_insertion_curve=curves[("random", True)],
        deletion_auc=auc(curves[("map", False)]),
        insertion_auc=auc(curves[("map", True)]),
        random_deletion_auc=auc(curves[("random", False)]),
        random_insertion_auc=auc(curves[("random", True)]),
        baseline=baseline,
    )
