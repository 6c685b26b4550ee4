"""Grouped k-fold cross-validation of a recipe (the mortality and distillation papers' protocol).

Each fold's test part is one group fold of ``group_kfold``; a validation part for early
stopping is split off the remaining groups by ``split.fractions`` (its val share). The
metrics of every fold, their mean and standard deviation and the confusion matrix summed
over folds go into metrics.json. The model shipped is the one of the last fold (its test
fold is named in metrics.json), since refitting on everything would leave no held-out
estimate for it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmodels.train.loop import TensorData
from medmodels.train.recipe import Recipe, RecipeError
from medmodels.train.run import (
    LOG_DIR,
    Prepared,
    _cache_key,
    decode_all,
    default_out_dir,
    grouped_parts,
    model_entry,
    recipe_samples,
    run_log,
    train_prepared,
    write_run_folder,
)

log = logging.getLogger(__name__)


def development_indices(recipe: Recipe, labels: np.ndarray, groups: list[str | None]) -> np.ndarray:
    """Indices outside the fixed split's test part (its train + val groups)."""
    parts = grouped_parts(recipe, labels, groups)
    return np.sort(np.concatenate([parts["train"], parts["val"]]))


def fold_splits(recipe: Recipe, labels: np.ndarray, groups: list[str | None]) -> list[dict[str, np.ndarray]]:
    """Per fold: train / val / test index arrays, all disjoint by group.

    With ``split.cv_scope == "development"`` the folds cover only the fixed split's train and
    val groups; its test groups appear in no fold.
    """
    from medmodels.data.splits import group_kfold, grouped_split

    k = recipe.split.cv_folds
    train_share, val_share = recipe.split.fractions[0], recipe.split.fractions[1]
    val_frac = val_share / (train_share + val_share)
    pool = (development_indices(recipe, labels, groups) if recipe.split.cv_scope == "development"
            else np.arange(len(labels)))
    out = []
    for rest, test in group_kfold(labels[pool], [groups[i] for i in pool], k, seed=recipe.split.seed):
        rest, test = pool[rest], pool[test]
        if val_frac > 0:
            tr, va = grouped_split(labels[rest], [groups[i] for i in rest], [1 - val_frac, val_frac],
                                   seed=recipe.split.seed)
            out.append({"train": rest[tr], "val": rest[va], "test": test})
        else:
            out.append({"train": rest, "val": rest[:0], "test": test})
    return out


def summarize_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of every numeric test metric, and the summed confusion matrix."""
    keys = sorted({k for m in fold_metrics for k, v in m["metrics"].items() if isinstance(v, (int, float))})
    mean, std = {}, {}
    for k in keys:
        values = [m["metrics"][k] for m in fold_metrics if isinstance(m["metrics"].get(k), (int, float))]
        mean[k] = float(np.mean(values)) if values else None
        std[k] = float(np.std(values)) if values else None
    cm = np.sum([np.asarray(m["confusion_matrix"]) for m in fold_metrics], axis=0)
    return {"mean": mean, "std": std, "confusion_matrix_sum": cm.astype(int).tolist(),
            "n_folds": len(fold_metrics)}


def run_cv(recipe: Recipe, out_dir: Path | str | None = None) -> Path:
    """Train ``split.cv_folds`` models; write the last fold's weights and every fold's metrics."""
    if recipe.split.cv_folds < 2:
        raise RecipeError(f"Recipe {recipe.name}: cross-validation needs split.cv_folds >= 2.")
    out = Path(out_dir) if out_dir is not None else default_out_dir(recipe)
    torch.set_num_threads(max(1, recipe.threads))
    with run_log(LOG_DIR / recipe.task / f"{recipe.name}.log") as progress:
        entry = model_entry(recipe)
        pool = recipe_samples(recipe)
        labels = np.asarray(pool.labels, dtype=int)
        key = _cache_key(recipe, entry.preprocess, pool) if recipe.data != "synthetic" else None
        images = decode_all(pool, entry.preprocess, key)
        y = torch.as_tensor(labels, dtype=torch.long)
        folds, model, last = [], None, None
        for i, split in enumerate(fold_splits(recipe, labels, pool.groups), start=1):
            log.info("fold %d/%d: %d train, %d val, %d test images", i, recipe.split.cv_folds,
                     len(split["train"]), len(split["val"]), len(split["test"]))
            data = {n: TensorData(images[torch.as_tensor(ix)], y[torch.as_tensor(ix)])
                    for n, ix in split.items()}
            fold_recipe = dataclasses.replace(recipe, seed=recipe.seed + i - 1)
            metrics, model = train_prepared(fold_recipe, Prepared(entry, pool, split, data), progress)
            metrics["fold"] = i
            log.info("fold %d/%d: test accuracy %.4f", i, recipe.split.cv_folds,
                     metrics["test"]["metrics"]["accuracy"])
            folds.append(metrics)
            last = metrics
        assert last is not None and model is not None
        result = dict(last)
        result["cv"] = {
            "folds": [{"fold": m["fold"], "test": m["test"], "split": m["split"],
                       "training": {k: v for k, v in m["training"].items() if k != "history"}}
                      for m in folds],
            **summarize_folds([m["test"] for m in folds]),
        }
        result["recipe"] = recipe.to_dict()
        write_run_folder(model, entry, recipe, result, out)
    return out
