"""``python -m medmodels segment-lungs IMAGE...``: lung field, area and plausibility per X-ray."""
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
    return p


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
