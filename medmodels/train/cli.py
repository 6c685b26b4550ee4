"""``python -m medmodels train``: re-make a weight from its recipe file."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from medmodels.train.recipe import load_recipe

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe file (recipes/*.yaml)",
        description="Train one model from a recipe and write its weights folder "
        "(model.safetensors, config.json, metrics.json, README.md).",
    )
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML file")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: weights/<task>/<name>)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="override the recipe's wall-clock budget")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (recipe: 1)")
    p.set_defaults(func=run)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {k: v for k, v in (("epochs", args.epochs), ("max_minutes", args.max_minutes),
                              ("threads", args.threads)) if v is not None}


def run(args: argparse.Namespace) -> int:
    from medmodels.train import segmentation
    from medmodels.train.cv import run_cv
    from medmodels.train.run import run_recipe

    if segmentation.is_segmentation_recipe(args.recipe):  # kind: segmentation (lung-field U-Net)
        print(segmentation.run_segmentation(segmentation.load_seg_recipe(args.recipe), args.out))
        return 0

    try:  # the chest X-ray recipes have their own runner (fold-1 held-out split, audits)
        from medmodels.train import xray
    except ImportError:
        xray = None  # type: ignore[assignment]
    if xray is not None and xray.is_xray_recipe(args.recipe):
        recipe, opts = xray.load_xray_recipe(args.recipe)
        recipe = dataclasses.replace(recipe, **_overrides(args))
        out = xray.run_xray(recipe, opts, args.out)
    else:
        recipe = load_recipe(args.recipe)
        recipe = dataclasses.replace(recipe, **_overrides(args))
        runner = run_cv if recipe.split.cv_folds > 0 else run_recipe
        out = runner(recipe, args.out)
    log.info("trained %s/%s -> %s", recipe.task, recipe.name, out)
    print(out)  # the folder, for scripts
    return 0
