"""Lung-field and localisation commands.

``python -m medmodels segment-lungs IMAGE...``: lung field, area and plausibility per X-ray.
``python -m medmodels localisation-survey --task covid``: where the shipped models look, over
their test splits, written to ``weights/<task>/localisation.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "segment-lungs", help="lung-field mask of chest X-rays (area, implausible-area flag)",
        description="Segment the lung fields of frontal chest X-rays with the shipped lungs/unet_lite0 "
        "model. Prints the lung share of each image and flags an implausible area (under 10 %% or "
        "over 60 %%); --out writes the mask and an outline overlay per image.",
    )
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="folder for <stem>_lungs.png and <stem>_outline.png")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.set_defaults(func=run)
    s = subparsers.add_parser(
        "localisation-survey", help="share of attribution inside the lungs / cell box, per shipped model and method",
        description="Explain every test image of every shipped model of a chest X-ray or WBC task with "
        "every method and write the mean share inside the lung field (or cell box) next to chance "
        "to weights/<task>/localisation.json (needs ../shared/data).",
    )
    s.add_argument("--task", required=True, choices=("covid", "mortality", "wbc"))
    s.add_argument("--models", nargs="*", default=None, help="only these models (default: every shipped one)")
    s.add_argument("--max-multi", type=int, default=24,
                   help="test images for IG, SmoothGrad and Occlusion (a seeded stratified subset)")
    s.add_argument("--out", type=Path, default=None, help="record file (default weights/<task>/localisation.json)")
    s.set_defaults(func=run_survey)
    return p


def run_survey(args: argparse.Namespace) -> int:
    from medmodels.explain.localise_survey import SurveyConfig, survey_task

    print(survey_task(args.task, SurveyConfig(max_multi_pass_images=args.max_multi), args.models, args.out))
    return 0


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from medmodels.data.images import load_image
    from medmodels.lungs import draw_outline, load_lung_model, segment_lungs

    model, _ = load_lung_model()
    rows = []
    for path in args.images:
        image = load_image(path)
        field = segment_lungs(image, model)
        row = {"file": str(path), "width": image.width, "height": image.height,
               "lung_area_fraction": round(field.area_fraction, 4), "plausible": field.plausible,
               "note": field.note}
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            mask = field.image_mask()
            mask_path = args.out / f"{path.stem}_lungs.png"
            Image.fromarray((mask * 255).astype(np.uint8)).save(mask_path)
            draw_outline(image, mask).save(args.out / f"{path.stem}_outline.png")
            row["mask"] = str(mask_path)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            flag = "ok" if r["plausible"] else r["note"]
            print(f"{r['file']}: lung area {100 * r['lung_area_fraction']:.1f} % ({flag})")
    return 0
