"""Train a segmentation model (the lung-field U-Net) from a ``kind: segmentation`` recipe.

Kept apart from the classification engine: the data are image/mask pairs, the loss is
BCE + soft Dice and the score is Dice per image. Like the engine it trains on one CPU
thread, checkpoints every epoch (a killed run resumes where it stopped), stops early on
the validation loss and never on a wall clock, and writes ``weights/<task>/<name>/``
(fp16 model.safetensors, config.json, metrics.json, README.md).

``python -m medmodels train --recipe recipes/lungs_unet_lite0.yaml``
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmodels.train.recipe import RecipeError, read_recipe_mapping

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = REPO_ROOT / "weights"
CACHE_DIR = REPO_ROOT / ".cache" / "segmentation"
KIND = "segmentation"


@dataclass(frozen=True)
class SegAugment:
    """Geometric and intensity jitter applied to image and mask together (masks: geometry only)."""

    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.06
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_std: float = 0.02


@dataclass(frozen=True)
class SegRecipe:
    """Everything a segmentation run depends on (recorded verbatim in metrics.json)."""

    name: str
    task: str
    model: str
    kind: str = KIND
    init: str = "imagenet"  # "imagenet" (packaged EfficientNet-Lite0 weights) or "random"
    epochs: int = 60
    batch_size: int = 8
    lr: float = 2e-3
    encoder_lr: float = 5e-4
    weight_decay: float = 1e-4
    plateau_patience: int = 3
    plateau_factor: float = 0.3
    early_stopping_patience: int = 8
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 42
    seed: int = 0
    threads: int = 1
    half: bool = True
    max_images: int = 0  # 0 = all (a small number makes a quick test run)
    augment: SegAugment = field(default_factory=SegAugment)
    notes: str = ""


def is_segmentation_recipe(path: str | Path) -> bool:
    """True when the recipe file says ``kind: segmentation`` (the train command's dispatch)."""
    try:
        return read_recipe_mapping(Path(path)).get("kind") == KIND
    except RecipeError:
        return False


def load_seg_recipe(path: str | Path) -> SegRecipe:
    data = dict(read_recipe_mapping(Path(path)))
    known = {f.name for f in dataclasses.fields(SegRecipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"{Path(path).name}: unknown segmentation recipe settings: {', '.join(unknown)}.")
    aug = data.pop("augment", None) or {}
    aug_known = {f.name for f in dataclasses.fields(SegAugment)}
    if set(aug) - aug_known:
        raise RecipeError(f"{Path(path).name}: unknown augment settings: {', '.join(sorted(set(aug) - aug_known))}.")
    aug = {k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for req in ("name", "task", "model"):
        if req not in data:
            raise RecipeError(f"{Path(path).name}: a segmentation recipe needs '{req}'.")
    recipe = SegRecipe(**data, augment=SegAugment(**aug))
    if recipe.init not in ("imagenet", "random"):
        raise RecipeError(f"{Path(path).name}: init must be 'imagenet' or 'random', not {recipe.init!r}.")
    if abs(sum(recipe.fractions) - 1) > 1e-6 or len(recipe.fractions) != 3:
        raise RecipeError(f"{Path(path).name}: fractions must be three numbers summing to 1.")
    return recipe


# --------------------------------------------------------------------------- data


def load_pairs(cases: list, pre: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode cases into uint8 [N,1,H,W] gray images and bool-as-uint8 masks at the model size."""
    from PIL import Image

    from medmodels.data.images import load_image
    from medmodels.data.transforms import to_uint8_tensor

    images, masks = [], []
    for c in cases:
        images.append(to_uint8_tensor(load_image(c.image), pre)[:1])
        m = Image.open(c.mask).convert("L").convert("RGB")
        masks.append((to_uint8_tensor(m, pre)[:1] > 127).to(torch.uint8))
    return torch.stack(images), torch.stack(masks)


def augment_batch(x: torch.Tensor, y: torch.Tensor, aug: SegAugment, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (same for image and mask, black outside) and gamma/noise on the image.

    ``x`` float [B,1,H,W] in [0,1], ``y`` float mask; returns the same shapes.
    """
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    ang = uniform(-aug.rotation_deg, aug.rotation_deg) * math.pi / 180
    scale = uniform(*aug.scale)
    tx, ty = uniform(-aug.translate, aug.translate) * 2, uniform(-aug.translate, aug.translate) * 2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = (F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    gamma = uniform(*aug.gamma).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    if aug.noise_std > 0:
        x = (x + aug.noise_std * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return x, y


def model_input(gray: torch.Tensor, pre: Any) -> torch.Tensor:
    """uint8 or [0,1] float gray [B,1,H,W] -> the normalised 3-channel tensor the model takes."""
    from medmodels.data.transforms import normalize

    x = gray.float() / 255.0 if gray.dtype == torch.uint8 else gray
    return normalize(x.expand(-1, 3, -1, -1), pre)


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + (1 - soft Dice), Dice averaged over images."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + (1 - dice).mean()


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Hard Dice per image of boolean [N,H,W] arrays (two empty masks agree: 1)."""
    p = pred.reshape(len(pred), -1)
    t = truth.reshape(len(truth), -1)
    inter = (p & t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return np.where(denom == 0, 1.0, 2 * inter / np.maximum(denom, 1))


@torch.inference_mode()
def predict_probs(model: nn.Module, gray: torch.Tensor, pre: Any, batch: int = 16) -> torch.Tensor:
    model.eval()
    out = [torch.sigmoid(model(model_input(gray[i:i + batch], pre))) for i in range(0, len(gray), batch)]
    return torch.cat(out)


# --------------------------------------------------------------------------- training


def _recipe_hash(recipe: SegRecipe) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(recipe), sort_keys=True).encode()).hexdigest()[:16]


def _machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run_segmentation(recipe: SegRecipe, out_dir: Path | None = None, data_root: Path | None = None,
                     checkpoint_dir: Path | None = None) -> Path:
    """Train, early-stop on validation loss, test on held-out cases, write the weights folder."""
    from tqdm import tqdm

    from medmodels.data.lungs import FINDINGS, case_split, lung_cases
    from medmodels.zoo.registry import build_arch
    from medmodels.zoo.unet import get_segmentation_entry

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    entry = get_segmentation_entry(recipe.task, recipe.model)
    pre = entry.preprocess
    cases = lung_cases(data_root)
    if recipe.max_images:
        rng = np.random.default_rng(recipe.seed)
        cases = [cases[i] for i in sorted(rng.choice(len(cases), size=min(recipe.max_images, len(cases)), replace=False))]
    parts = dict(zip(("train", "val", "test"), case_split(cases, recipe.fractions, recipe.split_seed)))
    for name, part in parts.items():
        if not part:
            raise RecipeError(f"Recipe {recipe.name}: the {name} part is empty; use more images.")
    t0 = time.perf_counter()
    tensors = {k: load_pairs(v, pre) for k, v in parts.items()}
    log.info("decoded %s pairs in %.1fs", {k: len(v) for k, v in parts.items()}, time.perf_counter() - t0)

    model = build_arch(entry, imagenet=recipe.init == "imagenet")  # type: ignore[arg-type]
    enc = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    dec = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.AdamW([{"params": enc, "lr": recipe.encoder_lr}, {"params": dec, "lr": recipe.lr}],
                            weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=recipe.plateau_factor,
                                                       patience=recipe.plateau_patience)
    ckpt_dir = checkpoint_dir or CACHE_DIR / f"{recipe.task}_{recipe.name}"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "checkpoint.pt"
    rhash = _recipe_hash(recipe)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_val": float("inf"), "best_epoch": 0,
                             "bad_epochs": 0, "best_state": None, "train_seconds": 0.0}
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("recipe_hash") == rhash:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            state = ck["state"]
            log.info("resumed %s at epoch %d", recipe.name, state["epoch"])
        else:
            log.warning("checkpoint %s is for another recipe; starting afresh", ckpt_path)
    gen = torch.Generator().manual_seed(recipe.seed * 1000 + state["epoch"])
    xtr, ytr = tensors["train"]
    xva, yva = tensors["val"]
    stop_reason = "max_epochs"
    while state["epoch"] < recipe.epochs:
        if state["bad_epochs"] >= recipe.early_stopping_patience:
            stop_reason = "early_stopping"
            break
        epoch = state["epoch"] + 1
        t_ep = time.perf_counter()
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        losses = []
        bar = tqdm(range(0, len(order), recipe.batch_size), desc=f"epoch {epoch}", unit="batch",
                   file=sys.stderr, leave=False)
        for i in bar:
            idx = order[i:i + recipe.batch_size]
            if len(idx) < 2:
                continue  # batch norm needs two images
            x, y = augment_batch(xtr[idx].float() / 255.0, ytr[idx].float(), recipe.augment, gen)
            loss = seg_loss(model(model_input(x, pre)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        val_loss, val_dice = _validate(model, xva, yva, pre)
        sched.step(val_loss)
        seconds = time.perf_counter() - t_ep
        state["train_seconds"] += seconds
        state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                                 "val_dice": val_dice, "lr": [g["lr"] for g in opt.param_groups],
                                 "seconds": round(seconds, 1)})
        if val_loss < state["best_val"] - 1e-5:
            state.update(best_val=val_loss, best_epoch=epoch, bad_epochs=0,
                         best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        log.info("epoch %d: train %.4f val %.4f dice %.4f (%.0fs)%s", epoch, np.mean(losses), val_loss,
                 val_dice, seconds, " *" if state["best_epoch"] == epoch else "")
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"recipe_hash": rhash, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "state": state}, tmp)
        os.replace(tmp, ckpt_path)
    else:
        stop_reason = "max_epochs"
    if state["bad_epochs"] >= recipe.early_stopping_patience:
        stop_reason = "early_stopping"
    model.load_state_dict(state["best_state"])
    if recipe.half:  # score exactly what is shipped
        model.load_state_dict({k: (v.half().float() if v.is_floating_point() else v)
                               for k, v in model.state_dict().items()})
    metrics = _evaluate(model, tensors, parts, pre, FINDINGS, entry)
    metrics.update({
        "recipe": dataclasses.asdict(recipe),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training": {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                     "best_val_loss": state["best_val"], "stopped": stop_reason,
                     "train_seconds": round(state["train_seconds"], 1), "history": state["history"]},
        "machine": _machine(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "split": {k: {"n_images": len(v), "findings": {f: sum(c.finding == f for c in v) for f in FINDINGS},
                      "cases": sorted(c.case for c in v)} for k, v in parts.items()},
    })
    folder = out_dir or WEIGHTS_DIR / recipe.task / recipe.name
    save_segmentation_folder(model, entry, folder, metrics=metrics, half=recipe.half)
    return folder


@torch.inference_mode()
def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pre: Any) -> tuple[float, float]:
    model.eval()
    losses, dices = [], []
    for i in range(0, len(x), 16):
        logits = model(model_input(x[i:i + 16], pre))
        t = y[i:i + 16].float()
        losses.append(float(seg_loss(logits, t)) * len(t))
        dices.extend(dice_scores((logits > 0).squeeze(1).numpy(), t.bool().squeeze(1).numpy()).tolist())
    return sum(losses) / len(x), float(np.mean(dices))


def _evaluate(model: nn.Module, tensors: dict, parts: dict, pre: Any, findings: tuple[str, ...], entry: Any) -> dict[str, Any]:
    """Dice (and IoU, predicted area, implausible-area flags) on the validation and test cases."""
    from medmodels.zoo.unet import LUNGS_TASK

    lo, hi = LUNGS_TASK.plausible_area
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        x, y = tensors[part]
        pred = (predict_probs(model, x, pre) > 0.5).squeeze(1).numpy()
        truth = y.bool().squeeze(1).numpy()
        dice = dice_scores(pred, truth)
        inter = (pred & truth).reshape(len(pred), -1).sum(1)
        union = (pred | truth).reshape(len(pred), -1).sum(1)
        iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
        area = pred.reshape(len(pred), -1).mean(1)
        per = {}
        for f in findings:
            sel = np.array([c.finding == f for c in parts[part]])
            if sel.any():
                per[f] = {"n": int(sel.sum()), "dice_mean": float(dice[sel].mean()),
                          "dice_min": float(dice[sel].min()), "iou_mean": float(iou[sel].mean())}
        out[part] = {
            "n": int(len(dice)), "dice_mean": float(dice.mean()), "dice_median": float(np.median(dice)),
            "dice_min": float(dice.min()), "dice_std": float(dice.std()), "iou_mean": float(iou.mean()),
            "by_finding": per,
            "predicted_area": {"mean": float(area.mean()), "min": float(area.min()), "max": float(area.max())},
            "implausible_area": int(((area < lo) | (area > hi)).sum()),
            "per_image": {c.name: round(float(d), 4) for c, d in zip(parts[part], dice)},
        }
    return {"scores": out}


def save_segmentation_folder(model: nn.Module, entry: Any, folder: Path, *, metrics: dict[str, Any], half: bool) -> Path:
    """The four files of a model folder, in the layout ``medmodels.hub`` uses for classifiers."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from medmodels.hub import CARD_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, sha256_of
    from medmodels.train.segmentation_card import lung_card

    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"task": entry.task, "name": entry.name, "arch": entry.arch})
    config = {"task": entry.task, "name": entry.name, "arch": entry.arch, "kind": KIND,
              "classes": ["background", "lung"], "preprocess": asdict(entry.preprocess),
              "num_parameters": sum(p.numel() for p in model.parameters()), "format": "safetensors",
              "dtype": str(dtype).removeprefix("torch."), "sha256": sha256_of(weights)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / CARD_FILE).write_text(lung_card(entry, metrics))
    log.info("saved %s to %s (%.1f MB)", entry.key, folder, weights.stat().st_size / 1e6)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train a segmentation recipe (kind: segmentation).")
    p.add_argument("--recipe", required=True, type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(run_segmentation(load_seg_recipe(args.recipe), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
