"""Run a recipe end to end: samples -> grouped split -> cached tensors -> fit -> test -> weights folder.

``run_recipe(recipe, out_dir=None) -> Path`` is the library entry point behind
``python -m medmodels train``. It writes ``weights/<task>/<name>/`` (model.safetensors,
config.json, metrics.json, README.md) through ``medmodels.hub.save_model_folder``; the
metrics.json holds the recipe, the group ids of every split, the training history and
time, the CPU inference time and every test metric, so that the reproduction report and
``evaluate`` can be rebuilt from it alone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmodels.data.images import load_image
from medmodels.data.samples import LabelledSet, Sample
from medmodels.data.shared import shared_samples, wbc_augmented_samples, wbc_cell_copies
from medmodels.data.splits import grouped_split
from medmodels.data.transforms import to_uint8_tensor
from medmodels.hub import save_model_folder
from medmodels.inference import time_inference
from medmodels.metrics import compute_metrics
from medmodels.train.card import model_card
from medmodels.train.losses import class_weights_reciprocal, margin_loss
from medmodels.train.loop import (
    DEFAULT_HEAD_PREFIXES,
    FitConfig,
    FitResult,
    LossFn,
    TensorData,
    ce_loss,
    fit,
    predict_logits,
)
from medmodels.train.recipe import Recipe, RecipeError
from medmodels.zoo.registry import ModelEntry, Preprocess, build_arch, count_parameters, get_entry, get_task

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = REPO_ROOT / "weights"
LOG_DIR = REPO_ROOT / "logs"
CACHE_DIR = REPO_ROOT / ".cache" / "tensors"
SPLIT_NAMES = ("train", "val", "test")


# --------------------------------------------------------------------------- data


def synthetic_samples(task: str, n: int, seed: int, size: int = 48) -> LabelledSet:
    """Generated images for the CI recipe: class k draws a blob of brightness tied to k.

    Learnable in one epoch, eight groups, no files; each sample's ``source`` is PNG bytes.
    """
    import io

    from PIL import Image

    classes = get_task(task).classes
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = i % len(classes)
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        c = size // 2 + rng.integers(-4, 5, size=2)
        yy, xx = np.ogrid[:size, :size]
        disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size // 4) ** 2
        img[disc] = 80 + 170 * label // max(len(classes) - 1, 1)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        samples.append(Sample(name=f"synthetic_{i:04d}.png", source=buf.getvalue(),
                              label=label, group=f"g{i % 8}"))
    return LabelledSet(samples, classes)


def recipe_samples(recipe: Recipe) -> LabelledSet:
    """The labelled pool a recipe trains and tests on (labels None are dropped)."""
    if recipe.data == "synthetic":
        pool = synthetic_samples(recipe.task, recipe.max_images or 32, recipe.seed)
    elif recipe.data == "wbc_cell_copies":
        pool = wbc_cell_copies()
    elif recipe.data == "wbc_augmented":
        pool = wbc_augmented_samples()
        pool = LabelledSet([s for s in pool.samples if s.meta.get("split") in ("train", "test")],
                           pool.classes, pool.skipped)
    else:
        pool = shared_samples(recipe.task)
    if recipe.labels == "imputed":
        pool = _imputed(pool)
    samples = [s for s in pool.samples if s.label is not None]
    if recipe.max_images and len(samples) > recipe.max_images:
        rng = np.random.default_rng(recipe.seed)
        keep = np.sort(rng.choice(len(samples), size=recipe.max_images, replace=False))
        samples = [samples[i] for i in keep]
    if not samples:
        raise RecipeError(f"Recipe {recipe.name}: the data set holds no labelled images.")
    return LabelledSet(samples, pool.classes, pool.skipped)


def _imputed(pool: LabelledSet) -> LabelledSet:
    """Fill missing labels with the random-forest imputation of the mortality paper."""
    import pandas as pd

    from medmodels.train.imputation import impute_survival

    df = pd.DataFrame([dict(s.meta) for s in pool.samples])
    result = impute_survival(df)
    labels = list(result.labels)
    samples = [dataclasses.replace(s, label=None if lab is None or (isinstance(lab, float) and np.isnan(lab))
                                   else int(lab))
               for s, lab in zip(pool.samples, labels)]
    return LabelledSet(samples, pool.classes, pool.skipped)


def split_indices(recipe: Recipe, pool: LabelledSet) -> dict[str, np.ndarray]:
    """Train / val / test indices: by group (slide, original image, patient) unless ``random``."""
    labels = np.asarray(pool.labels, dtype=int)
    fractions = recipe.split.fractions
    if recipe.split.mode == "random":
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(labels))
        rest, test = train_test_split(idx, test_size=fractions[2], stratify=labels,
                                      random_state=recipe.split.seed)
        val_share = fractions[1] / (fractions[0] + fractions[1])
        train, val = (train_test_split(rest, test_size=val_share, stratify=labels[rest],
                                       random_state=recipe.split.seed)
                      if fractions[1] > 0 else (rest, rest[:0]))
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    return grouped_parts(recipe, labels, pool.groups)


def grouped_parts(recipe: Recipe, labels: np.ndarray, groups: Sequence[str | None]) -> dict[str, np.ndarray]:
    """The fixed by-group train / val / test split of ``split.fractions`` and ``split.seed``."""
    fractions = recipe.split.fractions
    names = [n for n, f in zip(SPLIT_NAMES, fractions) if f > 0]
    parts = grouped_split(labels, groups, [f for f in fractions if f > 0], seed=recipe.split.seed)
    out = {n: np.asarray([], dtype=int) for n in SPLIT_NAMES}
    out.update(dict(zip(names, parts)))
    return out


def model_entry(recipe: Recipe) -> ModelEntry:
    """The registry entry of the recipe's model, with the recipe's input size if it sets one."""
    entry = get_entry(recipe.task, recipe.model_name)
    if recipe.input_size and recipe.input_size != entry.preprocess.input_size:
        pre = dataclasses.replace(entry.preprocess, input_size=recipe.input_size)
        entry = dataclasses.replace(entry, preprocess=pre)
    return entry


def _cache_key(recipe: Recipe, pre: Preprocess, pool: LabelledSet) -> str:
    h = hashlib.sha256()
    h.update(repr((recipe.task, recipe.data, pre.input_size, pre.resize, pre.grayscale)).encode())
    for s in pool.samples:
        h.update(s.name.encode())
        h.update(str(s.source if isinstance(s.source, Path) else len(s.source)).encode())
    return h.hexdigest()[:16]


def decode_all(pool: LabelledSet, pre: Preprocess, cache_key: str | None = None) -> torch.Tensor:
    """Every image decoded once and resized to the model view: uint8 [N, C, H, W].

    Kept in memory for the whole run (and in ``.cache/tensors`` when a key is given), since
    decoding PNG/JPEG files every epoch would cost more than training a shallow net.
    """
    path = CACHE_DIR / f"{cache_key}.pt" if cache_key else None
    if path is not None and path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached.shape[0] == len(pool):
            log.info("decoded images from cache %s", path.name)
            return cached
    t0 = time.perf_counter()
    images = torch.stack([to_uint8_tensor(load_image(s.source, s.name), pre) for s in pool.samples])
    log.info("decoded %d images in %.1fs", len(pool), time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(images, path)
    return images


# --------------------------------------------------------------------------- losses


def build_loss(recipe: Recipe, train_labels: np.ndarray, n_classes: int,
               val_labels: np.ndarray | None = None) -> tuple[LossFn, LossFn]:
    """(training loss, validation loss) for the recipe's loss, balancing and distillation.

    Class weights (``balance="class_weight"``) weight the training loss only. The validation
    loss that picks the best epoch is unweighted, or, with ``val_loss="balanced"``, weighted
    so that every class of the validation part counts equally. With distillation the
    validation loss is cross-entropy on the labels.
    """
    weights = None
    if recipe.balance == "class_weight":
        weights = class_weights_reciprocal(np.bincount(train_labels, minlength=n_classes))
    val_weights = None
    if recipe.val_loss == "balanced" and val_labels is not None and len(val_labels):
        counts = np.bincount(val_labels, minlength=n_classes).astype(float)
        present = counts > 0
        w = np.zeros(n_classes)
        w[present] = counts.sum() / (present.sum() * counts[present])
        val_weights = torch.tensor(w, dtype=torch.float32)
    if recipe.loss == "margin":
        def margin(w: torch.Tensor | None) -> LossFn:
            return lambda logits, y, x, idx: margin_loss(logits, y, class_weights=w)

        train_fn, val_fn = margin(weights), margin(val_weights)
    else:
        train_fn, val_fn = ce_loss(weights), ce_loss(val_weights)
    if recipe.distill is not None:
        train_fn = distillation_loss_fn(recipe, weights)
        val_fn = ce_loss(val_weights)
    return train_fn, val_fn


def distillation_loss_fn(recipe: Recipe, class_weights: torch.Tensor | None) -> LossFn:
    """Hinton distillation from the trained teacher named in ``recipe.distill``.

    The teacher sees the very batch the student saw (same augmentation, same normalised
    tensor), so teacher and student must share the task's preprocessing.
    """
    from medmodels.hub import load_trained
    from medmodels.train.losses import distillation_loss

    assert recipe.distill is not None
    teacher, _ = load_trained(recipe.task, recipe.distill.teacher)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = recipe.distill

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        return distillation_loss(logits, teacher_logits, y, cfg.temperature, cfg.alpha,
                                 class_weights=class_weights)

    return loss


def fit_config(recipe: Recipe, entry: ModelEntry) -> FitConfig:
    prefixes = tuple(entry.kwargs.get("head_prefixes", DEFAULT_HEAD_PREFIXES))  # type: ignore[arg-type]
    return FitConfig(
        epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        optimizer=recipe.optimizer, weight_decay=recipe.weight_decay, augment=recipe.augment,
        lr_schedule=recipe.lr_schedule, lr_factor=recipe.lr_factor, lr_patience=recipe.lr_patience,
        balance="none" if recipe.balance == "class_weight" else recipe.balance,
        freeze_epochs=recipe.freeze_epochs, freeze_lr=recipe.freeze_lr,
        early_stopping_patience=recipe.early_stopping_patience, max_minutes=recipe.max_minutes,
        seed=recipe.seed, head_prefixes=prefixes, recalibrate_bn=recipe.recalibrate_bn,
    )


# --------------------------------------------------------------------------- metrics


def probabilities(model: nn.Module, images: torch.Tensor, pre: Preprocess) -> np.ndarray:
    if len(images) == 0:
        return np.zeros((0, 0))
    return F.softmax(predict_logits(model, images, pre), dim=1).numpy()


def split_metrics(model: nn.Module, data: TensorData, pre: Preprocess, entry: ModelEntry) -> dict | None:
    """Every metric of ``compute_metrics`` for one split (None when the split is empty)."""
    if len(data) == 0:
        return None
    probs = probabilities(model, data.images, pre)
    report = compute_metrics(data.labels.numpy(), probs, entry.classes, entry.task_spec.positive_index)
    out = report.to_dict()
    out["notes"] = list(report.notes)
    return out


def per_group_accuracy(model: nn.Module, prep: Prepared, part: str) -> list[dict[str, Any]]:
    """Accuracy per group (slide, original image) and true class of one split part.

    With few groups in a test split, one group with an unusual stain can decide the
    headline number; this table shows where the errors are.
    """
    data = prep.data[part]
    if len(data) == 0:
        return []
    predicted = probabilities(model, data.images, prep.entry.preprocess).argmax(1)
    truth = data.labels.numpy()
    rows: dict[tuple[str, int], list[bool]] = {}
    for j, i in enumerate(prep.split[part]):
        key = (str(prep.pool.samples[i].group), int(truth[j]))
        rows.setdefault(key, []).append(bool(predicted[j] == truth[j]))
    return [{"group": g, "class": prep.pool.classes[c], "n": len(v), "accuracy": float(np.mean(v))}
            for (g, c), v in sorted(rows.items())]


def inference_times(model: nn.Module, pre: Preprocess) -> dict[str, Any]:
    """CPU milliseconds per image at batch 1 and batch 32, on the threads of this run."""
    return {"threads": torch.get_num_threads(), **time_inference(model, pre, batch_sizes=(1, 32))}


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def split_summary(pool: LabelledSet, idx: np.ndarray, grouped: bool) -> dict[str, Any]:
    labels = [pool.samples[i].label for i in idx]
    counts = Counter(labels)
    groups = sorted({str(pool.samples[i].group) for i in idx if pool.samples[i].group is not None})
    return {
        "n_images": int(len(idx)),
        "class_counts": {pool.classes[k]: int(counts.get(k, 0)) for k in range(len(pool.classes))},
        "n_groups": len(groups) if grouped else None,
        "groups": groups if grouped else None,
    }


# --------------------------------------------------------------------------- logging


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[IO[str]]:
    """Log everything (and the tqdm bars) of this run to ``path`` as well as stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", encoding="utf-8")
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield handle
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handle.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Prepared:
    """Everything a run needs before training: entry, pool, split and decoded tensors."""

    entry: ModelEntry
    pool: LabelledSet
    split: dict[str, np.ndarray]
    data: dict[str, TensorData]


def prepare(recipe: Recipe) -> Prepared:
    entry = model_entry(recipe)
    pool = recipe_samples(recipe)
    split = split_indices(recipe, pool)
    if len(split["train"]) == 0 or len(split["test"]) == 0:
        raise RecipeError(f"Recipe {recipe.name}: the split left the training or test part empty.")
    key = _cache_key(recipe, entry.preprocess, pool) if recipe.data != "synthetic" else None
    images = decode_all(pool, entry.preprocess, key)
    labels = torch.as_tensor(pool.labels, dtype=torch.long)
    data = {name: TensorData(images[torch.as_tensor(idx, dtype=torch.long)],
                             labels[torch.as_tensor(idx, dtype=torch.long)])
            for name, idx in split.items()}
    return Prepared(entry, pool, split, data)


def default_out_dir(recipe: Recipe) -> Path:
    if recipe.save_weights:
        return WEIGHTS_DIR / recipe.task / recipe.name
    return WEIGHTS_DIR / recipe.task / recipe.model_name / recipe.name


def run_recipe(recipe: Recipe, out_dir: Path | str | None = None) -> Path:
    """Train the recipe's model and write its weights folder; returns the folder.

    ``out_dir`` defaults to ``weights/<task>/<name>``. With ``save_weights: false`` (the
    leaky random-split comparison) only metrics.json is written, to
    ``weights/<task>/<model>/<name>/``. The run log goes to ``logs/<task>/<name>.log``.
    """
    out = Path(out_dir) if out_dir is not None else default_out_dir(recipe)
    torch.set_num_threads(max(1, recipe.threads))
    torch.manual_seed(recipe.seed)
    with run_log(LOG_DIR / recipe.task / f"{recipe.name}.log") as progress:
        log.info("recipe %s: %s", recipe.name, json.dumps(recipe.to_dict()))
        prep = prepare(recipe)
        metrics, model = train_prepared(recipe, prep, progress)
        write_run_folder(model, prep.entry, recipe, metrics, out)
        log.info("wrote %s (test accuracy %.4f)", out, metrics["test"]["metrics"]["accuracy"])
    return out


def write_run_folder(model: nn.Module, entry: ModelEntry, recipe: Recipe, metrics: dict[str, Any],
                     out: Path) -> None:
    """Weights, config, metrics and card; or, for ``save_weights: false``, metrics and card only."""
    out.mkdir(parents=True, exist_ok=True)
    if recipe.save_weights:
        save_model_folder(model, entry, out, metrics=metrics, card=model_card(recipe, entry, metrics),
                          half=recipe.half)
    else:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        write_card(out)


def train_prepared(recipe: Recipe, prep: Prepared, progress: IO[str] | None = None
                   ) -> tuple[dict[str, Any], nn.Module]:
    """Fit on prepared tensors and measure: returns (metrics.json content, trained model)."""
    entry, pre = prep.entry, prep.entry.preprocess
    torch.manual_seed(recipe.seed)
    model = build_arch(entry)
    train_fn, val_fn = build_loss(recipe, prep.data["train"].labels.numpy(), len(entry.classes),
                                  prep.data["val"].labels.numpy())
    result: FitResult = fit(model, prep.data["train"], prep.data["val"], pre,
                            fit_config(recipe, entry), train_fn, val_fn, progress)
    model.eval()
    if recipe.half:
        round_to_half(model)
    grouped = recipe.split.mode == "grouped"
    metrics: dict[str, Any] = {
        "task": recipe.task,
        "name": recipe.name,
        "model": entry.name,
        "arch": entry.arch,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe.to_dict(),
        "preprocess": dataclasses.asdict(pre),
        "parameters": count_parameters(model),
        "data": {
            "source": recipe.data,
            "n_images": len(prep.pool),
            "n_groups": len({s.group for s in prep.pool.samples if s.group is not None}) or None,
            "class_counts": dict(Counter(prep.pool.classes[s.label] for s in prep.pool.samples)),
        },
        "split": {
            "mode": recipe.split.mode,
            "by": "group" if grouped else "image (leaky: near-duplicates cross splits)",
            "fractions": list(recipe.split.fractions),
            "seed": recipe.split.seed,
            **{name: split_summary(prep.pool, idx, grouped) for name, idx in prep.split.items()},
            # flat lists read by medmodels.evaluate.held_out_set
            **{f"{name}_groups": split_summary(prep.pool, idx, grouped)["groups"]
               for name, idx in prep.split.items()},
        },
        "training": {
            "seconds": round(result.seconds, 2),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "epochs_run": result.epochs_run,
            "stop_reason": result.stop_reason,
            "history": result.history,
        },
        "machine": machine_info(),
    }
    metrics["val"] = split_metrics(model, prep.data["val"], pre, entry)
    metrics["test"] = split_metrics(model, prep.data["test"], pre, entry)
    if grouped:
        metrics["test_per_group"] = per_group_accuracy(model, prep, "test")
    metrics["inference_ms"] = inference_times(model, pre)
    return metrics, model


def test_pool_from_metrics(metrics: dict[str, Any]) -> LabelledSet:
    """The test samples a metrics.json was computed on (rebuilt from its recipe and split)."""
    from medmodels.train.recipe import recipe_from_dict

    recipe = recipe_from_dict(metrics["recipe"])
    pool = recipe_samples(recipe)
    idx = split_indices(recipe, pool)["test"]
    wanted = set(metrics["split"]["test"].get("groups") or [])
    if wanted and {str(pool.samples[i].group) for i in idx} != wanted:
        raise RecipeError(
            f"{metrics['name']}: the test split rebuilt from the recipe differs from the one in "
            "metrics.json (the data or the split code changed)."
        )
    return LabelledSet([pool.samples[i] for i in idx], pool.classes)


def reevaluate(folder: Path | str) -> dict[str, Any]:
    """Re-compute the test metrics of a trained weights folder on its own test split.

    The model is rebuilt from the folder (sha256 and architecture checked by the hub) and the
    test split from the recipe and group ids in its metrics.json, so the result should equal
    the stored ``test`` metrics up to floating-point noise.
    """
    from medmodels.hub import load_state
    from medmodels.train.recipe import recipe_from_dict

    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    recipe = recipe_from_dict(metrics["recipe"])
    entry = model_entry(recipe)
    state, _ = load_state(folder, entry)
    model = build_arch(entry)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    test = test_pool_from_metrics(metrics)
    images = decode_all(test, entry.preprocess)
    data = TensorData(images, torch.as_tensor(test.labels, dtype=torch.long))
    return split_metrics(model, data, entry.preprocess, entry) or {}


def round_to_half(model: nn.Module) -> nn.Module:
    """Round every float tensor through fp16, so metrics describe the model as it is stored."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def halve_trained_folder(folder: Path | str) -> dict[str, Any]:
    """Store a folder trained without ``half`` in fp16 and re-score it as stored.

    The test metrics, per-slide table and card are recomputed from the fp16 weights (a few
    borderline predictions can flip); the float32 test metrics stay under ``storage``.
    """
    from medmodels.hub import store_half

    folder = Path(folder)
    path = folder / "metrics.json"
    fp32_test = json.loads(path.read_text(encoding="utf-8")).get("test")
    store_half(folder)
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["test"] = reevaluate(folder)
    metrics["storage"]["fp32_test_metrics"] = (fp32_test or {}).get("metrics")
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if metrics["split"]["mode"] == "grouped":
        backfill_per_group(folder)
        metrics = json.loads(path.read_text(encoding="utf-8"))
    write_card(folder)
    return metrics


def write_card(folder: Path | str) -> Path:
    """(Re)write a run folder's README.md from its metrics.json and recipe.

    A folder without a weights file gets the "Weights not shipped" section: metrics-only runs
    (``save_weights: false``) say so, withdrawn runs say they scored near chance.
    """
    from medmodels.train.card import with_weights_status
    from medmodels.train.recipe import recipe_from_dict

    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    recipe = recipe_from_dict(metrics["recipe"])
    card = with_weights_status(model_card(recipe, model_entry(recipe), metrics), folder, recipe)
    path = folder / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def withdraw_weights(folder: Path | str) -> Path:
    """Remove a run's weights file but keep its metrics, split and card (which then says so).

    For runs that scored at chance: shipping them would cost repository megabytes and offer
    users a model that says nothing. The card names the recipe that re-makes them.
    """
    folder = Path(folder)
    for name in ("model.safetensors", "config.json"):
        (folder / name).unlink(missing_ok=True)
    write_card(folder)
    return folder


def group_ids(metrics: dict[str, Any], part: str) -> Sequence[str]:
    return metrics.get("split", {}).get(part, {}).get("groups") or []


def backfill_per_group(folder: Path | str) -> None:
    """Add ``test_per_group`` to a metrics.json written before that table existed."""
    from medmodels.hub import load_state
    from medmodels.train.recipe import recipe_from_dict

    folder = Path(folder)
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    recipe = recipe_from_dict(metrics["recipe"])
    prep = prepare(recipe)
    state, _ = load_state(folder, prep.entry)
    model = build_arch(prep.entry)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    metrics["test_per_group"] = per_group_accuracy(model, prep, "test")
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
