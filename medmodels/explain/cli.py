"""``python -m medmodels explain``: overlays and faithfulness scores for images on disk.

Writes one overlay PNG per image (``<stem>_<method>.png``) and ``explanations.csv`` with
the columns file, predicted_class, probability, method, deletion_auc, insertion_auc,
random_deletion_auc (and the insertion reference). Unreadable files in a folder are skipped
with a warning; an unreadable file named on the command line is an error.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from medmodels.csv_safety import frame_to_csv
from medmodels.explain.baselines import BASELINES, ExplainError
from medmodels.explain.faithfulness import deletion_insertion
from medmodels.explain.methods import METHODS, ExplainSettings, explain
from medmodels.explain.render import render_overlay

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
CSV_NAME = "explanations.csv"
CSV_COLUMNS = (
    "file", "predicted_class", "probability", "method",
    "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc",
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``explain`` command."""
    p = subparsers.add_parser(
        "explain", help="attribution overlays and deletion/insertion scores for images"
    )
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--method", default="gradcam", choices=list(METHODS))
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, help="folder for the overlays and the CSV")
    p.add_argument("--target", help="class name or index to explain (default: the predicted class)")
    p.add_argument("--baseline", default="black", choices=list(BASELINES),
                   help="IG/occlusion baseline, also used by the deletion/insertion curves")
    p.add_argument("--ig-steps", type=int, default=ExplainSettings.ig_steps)
    p.add_argument("--cam-layer", help="Grad-CAM layer label (default: the model's first)")
    p.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--opacity", type=float, default=0.5)
    p.add_argument("--colormap", default=None, help="matplotlib colormap name")
    p.set_defaults(func=run)
    return p


def collect_images(inputs: list[str]) -> list[Path]:
    """Files named directly, plus the image files of named folders (sorted, recursive)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("%s holds no image files", path)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ExplainError(f"{item}: no such file or folder.")
    if not files:
        raise ExplainError("No image files were found in the given inputs.")
    return files


def _target(text: str | None, classes: tuple[str, ...]) -> int | None:
    if text is None:
        return None
    lowered = [c.lower() for c in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    raise ExplainError(f"Unknown target class {text!r}; the classes are: {', '.join(classes)}.")


def _load(files: list[Path], named: set[Path]) -> list[tuple[Path, object]]:
    from medmodels.data.images import load_image
    from medmodels.errors import ImageReadError

    loaded = []
    for path in files:
        try:
            loaded.append((path, load_image(path)))
        except ImageReadError as err:
            if path in named:
                raise
            log.warning("skipped %s: %s", path, err)
    if not loaded:
        raise ExplainError("None of the image files could be read.")
    return loaded


def _overlay_path(out: Path, source: Path, method: str, written: set[Path]) -> Path:
    """``<stem>_<method>.png``; a numeric suffix keeps same-named files from two folders apart."""
    path = out / f"{source.stem}_{method}.png"
    n = 1
    while path in written:
        n += 1
        path = out / f"{source.stem}_{method}_{n}.png"
    written.add(path)
    return path


def run(args: argparse.Namespace) -> int:
    """Explain every image, write overlays and the CSV; 0 on success."""
    from medmodels.data.transforms import model_view, preprocess_batch
    from medmodels.hub import load_trained

    model, card = load_trained(args.task, args.model)
    entry = card.entry
    settings = ExplainSettings(ig_steps=args.ig_steps, ig_baseline=args.baseline,
                               cam_layer=args.cam_layer)
    target = _target(args.target, entry.classes)
    files = collect_images(args.inputs)
    named = {Path(i) for i in args.inputs if Path(i).is_file()}
    loaded = _load(files, named)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    written: set[Path] = set()
    for start in range(0, len(loaded), max(1, args.batch_size)):
        chunk = loaded[start : start + max(1, args.batch_size)]
        images = [img for _, img in chunk]
        x = preprocess_batch(images, entry.preprocess)
        result = explain(model, entry, x, target, args.method, settings)
        faith = deletion_insertion(
            model, x, result.maps, result.target, steps=args.steps, baseline=args.baseline,
            preprocess=entry.preprocess,
        )
        for i, (path, img) in enumerate(chunk):
            overlay = render_overlay(
                model_view(img, entry.preprocess), result.maps[i], colormap=args.colormap,
                opacity=args.opacity, signed=result.signed,
            )
            overlay.save(_overlay_path(out, path, args.method, written))
            rows.append({
                "file": str(path),
                "predicted_class": entry.classes[int(result.extra["predicted"][i])],
                "probability": float(result.extra["predicted_prob"][i]),
                "method": args.method,
                "deletion_auc": float(faith.deletion_auc[i]),
                "insertion_auc": float(faith.insertion_auc[i]),
                "random_deletion_auc": float(faith.random_deletion_auc[i]),
                "random_insertion_auc": float(faith.random_insertion_auc[i]),
            })
    frame_to_csv(pd.DataFrame(rows, columns=list(CSV_COLUMNS)), out / CSV_NAME)
    log.info("wrote %d overlays and %s to %s", len(rows), CSV_NAME, out)
    return 0
