"""``python -m medmodels train``: re-make a weight from its recipe file."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from medmodels.train.recipe import RecipeError, load_recipe

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe file (recipes/*.yaml)",
        description="Train one model from a recipe and write its weights folder "
        "(model.safetensors, config.json, metrics.json, README.md).",
    )
    p.add_argument("--recipe", type=Path, help="recipe YAML file")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: weights/<task>/<name>)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="override the recipe's wall-clock budget")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (recipe: 1)")
    p.add_argument("--folds", type=int, default=None, help="override split.run_folds (folds to train)")
    p.add_argument("--only-folds", default="",
                   help="comma-separated folds to train into the fold cache, writing no run folder "
                        "(parallel runs; a later run without it assembles them)")
    p.add_argument("--source-audit", action="store_true",
                   help="fit the covid image-source classifier (weights/covid/source_audit.json) instead")
    p.set_defaults(func=run)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {k: v for k, v in (("epochs", args.epochs), ("max_minutes", args.max_minutes),
                              ("threads", args.threads)) if v is not None}


def run(args: argparse.Namespace) -> int:
    from medmodels.train import segmentation
    from medmodels.train.run import WEIGHTS_DIR
    from medmodels.train.run import run as run_recipe

    if args.source_audit:
        from medmodels.train.audit import write_source_audit

        print(write_source_audit(WEIGHTS_DIR))
        return 0
    if args.recipe is None:
        raise RecipeError("Give a recipe file (--recipe recipes/<task>_<name>.yaml) or --source-audit.")
    if segmentation.is_segmentation_recipe(args.recipe):  # kind: segmentation (lung-field U-Net)
        print(segmentation.run_segmentation(segmentation.load_seg_recipe(args.recipe), args.out))
        return 0
    recipe = dataclasses.replace(load_recipe(args.recipe), **_overrides(args))
    if args.folds is not None:
        recipe = dataclasses.replace(recipe, split=dataclasses.replace(recipe.split, run_folds=args.folds))
    only = [int(v) for v in (args.only_folds or "").split(",") if v.strip()]
    out = run_recipe(recipe, args.out, only_folds=only)
    log.info("trained %s/%s -> %s", recipe.task, recipe.name, out)
    print(out)  # the folder, for scripts
    return 0
