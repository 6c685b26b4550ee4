"""The training loop: epochs over in-memory uint8 tensors, best checkpoint by validation loss.

``fit`` is the one loop every recipe uses (and the X-ray / distillation recipes may call
directly). It knows nothing about data sets or files: it takes tensors, a ``FitConfig`` and
a ``loss_fn(logits, labels, images, indices) -> Tensor`` (so distillation plugs in by closing over a
teacher), and returns the history. The model is left holding the best weights.
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from medmodels.data.transforms import normalize
from medmodels.train.augment import augment_batch
from medmodels.train.batchnorm import recalibrate_batchnorm
from medmodels.train.losses import sample_weights_for_balance
from medmodels.train.recipe import AugmentConfig
from medmodels.zoo.registry import Preprocess

log = logging.getLogger(__name__)

# loss(logits, labels, images, indices): ``indices`` are the batch rows in the training
# data, so a loss can look up per-sample targets (e.g. cached teacher logits).
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]
DEFAULT_HEAD_PREFIXES = ("fc", "classifier", "head")


@dataclass(frozen=True)
class TensorData:
    """Decoded images at the model's input size (uint8 [N, C, H, W]) and their labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FitConfig:
    """The loop's knobs (a recipe minus data, model and loss choices)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "plateau"] = "constant"
    lr_factor: float = 0.3
    lr_patience: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    balance: Literal["none", "class_weight", "oversample", "sampler"] = "none"
    freeze_epochs: int = 0
    freeze_lr: float | None = None
    early_stopping_patience: int = 0
    max_minutes: float = 0.0
    seed: int = 0
    head_prefixes: tuple[str, ...] = DEFAULT_HEAD_PREFIXES
    # > 0: before each validation, re-estimate batch-norm statistics on this many training
    # images with dropout off (see medmodels.train.batchnorm; QuadSNet needs it)
    recalibrate_bn: int = 0


@dataclass
class FitResult:
    """What happened during training (written into metrics.json)."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    stop_reason: str


def ce_loss(class_weights: torch.Tensor | None = None) -> LossFn:
    """Cross-entropy as a ``LossFn`` (optionally weighted per class)."""

    def loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
             indices: np.ndarray) -> torch.Tensor:
        return F.cross_entropy(logits, labels, weight=class_weights)

    return loss


def epoch_order(
    labels: np.ndarray, balance: str, gen: np.random.Generator
) -> np.ndarray:
    """The sample indices of one epoch: shuffled, and rebalanced for ``oversample``/``sampler``.

    ``oversample`` repeats random members of the smaller classes up to the largest class
    count; ``sampler`` draws N indices with replacement with per-sample weights that give
    every class the same expected share (PyTorch's WeightedRandomSampler semantics).
    """
    n = len(labels)
    if balance == "oversample":
        classes, counts = np.unique(labels, return_counts=True)
        top = counts.max()
        parts = []
        for c, k in zip(classes, counts):
            members = np.flatnonzero(labels == c)
            extra = gen.choice(members, size=top - k, replace=True) if top > k else members[:0]
            parts.append(np.concatenate([members, extra]))
        idx = np.concatenate(parts)
        gen.shuffle(idx)
        return idx
    if balance == "sampler":
        weights = sample_weights_for_balance(torch.as_tensor(labels)).double().numpy()
        return gen.choice(n, size=n, replace=True, p=weights / weights.sum())
    return gen.permutation(n)


def _head_names(model: nn.Module, prefixes: Sequence[str]) -> set[str]:
    names = {n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))}
    if not names:
        raise ValueError(
            f"freeze_epochs > 0 but no parameter name starts with any of {tuple(prefixes)}"
        )
    return names


def _calibration_images(train: TensorData, cfg: FitConfig) -> torch.Tensor | None:
    """The fixed training subset for batch-norm recalibration (None when it is off)."""
    if cfg.recalibrate_bn <= 0:
        return None
    gen = np.random.default_rng(cfg.seed + 1)  # its own stream: the epoch order is unchanged
    n = min(cfg.recalibrate_bn, len(train))
    return train.images[np.sort(gen.choice(len(train), size=n, replace=False))]


def _optimizer(params: list[nn.Parameter], cfg: FitConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def _set_phase(model: nn.Module, frozen: bool, head: set[str]) -> list[nn.Parameter]:
    """Freeze everything but the head (``frozen``) or unfreeze all; return trainable params."""
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or name in head)
        if p.requires_grad:
            trainable.append(p)
    return trainable


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, pre: Preprocess, batch_size: int = 128
) -> torch.Tensor:
    """Logits for uint8 images, in eval mode and in batches."""
    model.eval()
    out = [
        model(normalize(images[i : i + batch_size], pre))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0)


def evaluate_loss(
    model: nn.Module, data: TensorData, pre: Preprocess, loss_fn: LossFn, batch_size: int = 128
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``data`` without augmentation."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            x = normalize(data.images[i : i + batch_size], pre)
            y = data.labels[i : i + batch_size]
            logits = model(x)
            total += float(loss_fn(logits, y, x, np.arange(i, i + len(y)))) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return total / max(n, 1), correct / max(n, 1)


def fit(
    model: nn.Module,
    train: TensorData,
    val: TensorData | None,
    pre: Preprocess,
    cfg: FitConfig,
    loss_fn: LossFn | None = None,
    val_loss_fn: LossFn | None = None,
    progress: IO[str] | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of its best epoch.

    Best = lowest validation loss (training loss when ``val`` is None or empty). With
    ``freeze_epochs`` > 0 only the head (parameters whose name starts with one of
    ``cfg.head_prefixes``) is trained for those epochs, then everything. Training stops
    early when the validation loss has not improved for ``early_stopping_patience`` epochs,
    or when the next epoch would overrun ``max_minutes``. ``loss_fn(logits, labels, images,
    indices)`` receives the normalised, augmented batch the model saw (and its rows in
    ``train``), so a distillation loss
    can run a teacher on it; ``val_loss_fn`` defaults to ``loss_fn``.
    """
    loss_fn = loss_fn or ce_loss()
    val_loss_fn = val_loss_fn or loss_fn
    torch.manual_seed(cfg.seed)
    gen_np = np.random.default_rng(cfg.seed)
    gen_torch = torch.Generator().manual_seed(cfg.seed)
    labels_np = train.labels.numpy()
    head = _head_names(model, cfg.head_prefixes) if cfg.freeze_epochs > 0 else set()
    has_val = val is not None and len(val) > 0
    calib = _calibration_images(train, cfg)

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    since_best, stop_reason = 0, "completed all epochs"
    opt: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
    frozen_now: bool | None = None
    start = time.perf_counter()
    epoch_seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        frozen = epoch <= cfg.freeze_epochs
        if frozen != frozen_now:
            params = _set_phase(model, frozen, head)
            lr = (cfg.freeze_lr or cfg.lr) if frozen else cfg.lr
            opt = _optimizer(params, cfg, lr)
            scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=lr * 1e-3)
                if cfg.lr_schedule == "plateau" else None)
            if frozen_now is not None:
                since_best = 0  # a new phase gets its own patience
            frozen_now = frozen
            log.info("epoch %d: %s phase, %d trainable tensors, lr %g",
                     epoch, "frozen-backbone" if frozen else "full", len(params), lr)
        assert opt is not None
        t0 = time.perf_counter()
        model.train()
        order = epoch_order(labels_np, cfg.balance, gen_np)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        run_loss, run_correct, seen = 0.0, 0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", file=progress or sys.stderr,
                   mininterval=5.0, leave=True, dynamic_ncols=False, ncols=100)
        for idx in bar:
            if len(idx) < 2 and len(order) >= 2:
                continue  # a batch of one breaks batch norm and adds noise
            x = normalize(augment_batch(train.images[idx], cfg.augment, gen_torch), pre)
            y = train.labels[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y, x, idx)
            loss.backward()
            opt.step()
            run_loss += float(loss.detach()) * len(y)
            run_correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{run_loss / seen:.4f}", acc=f"{run_correct / seen:.3f}",
                            refresh=False)
        bar.close()
        row = {"epoch": epoch, "train_loss": run_loss / max(seen, 1),
               "train_acc": run_correct / max(seen, 1), "frozen": float(frozen)}
        if calib is not None:
            recalibrate_batchnorm(model, calib, pre)
        if has_val:
            assert val is not None
            row["val_loss"], row["val_acc"] = evaluate_loss(model, val, pre, val_loss_fn)
            score = row["val_loss"]
        else:
            score = row["train_loss"]
        epoch_seconds = time.perf_counter() - t0
        row["seconds"] = epoch_seconds
        row["lr"] = float(opt.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step(score)
        history.append(row)
        improved = score < best_loss - 1e-6
        if improved:
            best_loss, best_epoch, since_best = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        log.info("epoch %d/%d: train loss %.4f acc %.3f%s (%.1fs)%s", epoch, cfg.epochs,
                 row["train_loss"], row["train_acc"],
                 f", val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}" if has_val else "",
                 epoch_seconds, " *best*" if improved else "")
        if not math.isfinite(row["train_loss"]):
            stop_reason = f"stopped at epoch {epoch}: the training loss is not finite"
            break
        patience_on = cfg.early_stopping_patience > 0 and not frozen
        if patience_on and since_best >= cfg.early_stopping_patience:
            stop_reason = (f"early stopping at epoch {epoch}: no validation-loss improvement "
                           f"for {cfg.early_stopping_patience} epochs")
            break
        elapsed = time.perf_counter() - start
        if cfg.max_minutes > 0 and epoch < cfg.epochs and elapsed + epoch_seconds > cfg.max_minutes * 60:
            stop_reason = (f"stopped at epoch {epoch} of {cfg.epochs}: the wall-clock budget of "
                           f"{cfg.max_minutes:g} minutes would be exceeded by another epoch")
            break
    _set_phase(model, False, head)
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    log.info("training done in %.0fs: %s; best epoch %d (loss %.4f)",
             seconds, stop_reason, best_epoch, best_loss)
    return FitResult(history=history, best_epoch=best_epoch, best_val_loss=float(best_loss),
                     epochs_run=len(history), seconds=seconds, stop_reason=stop_reason)
