"""The lung model on other X-ray sources: area statistics per source and a small montage.

Runs the shipped ``lungs/unet_lite0`` over every chest X-ray in ``../shared/data/cxr``
(ieee8023, NIH ChestX-ray14, Actualmed), prints the predicted lung area per source and how
many fields are flagged implausible, and draws a montage of outlines on a few images whose
licence allows it (ieee8023 images under CC BY 3.0 / 4.0, NIH images). Actualmed states no
licence ("research purposes only"), so it appears in the numbers, not in the picture.

    python scripts/lungs_figure.py [--out docs/figures/lungs_sources.png] [--json docs/figures/lungs_sources.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medmodels.data.images import load_image  # noqa: E402
from medmodels.data.shared import shared_data_root  # noqa: E402
from medmodels.lungs import draw_outline, load_lung_model, segment_batch  # noqa: E402

OPEN_LICENCES = ("CC BY 3.0", "CC BY 4.0", "CC BY")
TILE = 192


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures/lungs_sources.png"))
    parser.add_argument("--json", type=Path, default=Path("docs/figures/lungs_sources.json"))
    parser.add_argument("--per-source", type=int, default=3)  # plus one flagged NIH image
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = shared_data_root()
    if root is None:
        print("needs ../shared/data", file=sys.stderr)
        return 2
    base = root / "cxr"
    with (base / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if not r.get("duplicate_of")]
    model, _ = load_lung_model()
    stats: dict[str, dict] = {}
    shown: list[tuple[str, Image.Image, object]] = []
    credits: list[dict] = []
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    by_source: dict[str, list] = {}
    for i in order:
        r = rows[i]
        by_source.setdefault(r["dataset"], []).append(r)
    for source, items in sorted(by_source.items()):
        areas, flagged, examples, flagged_example = [], [], [], []
        for start in range(0, len(items), 16):
            chunk = items[start:start + 16]
            images = [load_image(base / "images" / r["filename"]) for r in chunk]
            for r, image, field in zip(chunk, images, segment_batch(model, images)):
                areas.append(field.area_fraction)
                if not field.plausible:
                    flagged.append(r["filename"])
                may_show = source == "nih_cxr14" or (source == "ieee8023" and r.get("license") in OPEN_LICENCES)
                if may_show and len(examples) < args.per_source and r.get("view") in ("PA", "AP"):
                    examples.append((f"{source} {r.get('finding')}", image, field))
                    credits.append({"file": r["filename"], "source": source, "licence": r.get("license")})
                if source == "nih_cxr14" and not field.plausible and not flagged_example:
                    flagged_example.append((f"{source} {r.get('finding')}", image, field))
                    credits.append({"file": r["filename"], "source": source, "licence": r.get("license")})
        a = np.asarray(areas)
        stats[source] = {"images": len(a), "area_median": float(np.median(a)), "area_p5": float(np.percentile(a, 5)),
                         "area_p95": float(np.percentile(a, 95)), "implausible": len(flagged),
                         "implausible_files": flagged[:20]}
        shown += examples + flagged_example  # a flagged field, to show what the flag catches
        print(f"{source}: {len(a)} images, lung area median {np.median(a):.3f} "
              f"(5-95 % {np.percentile(a, 5):.3f}-{np.percentile(a, 95):.3f}), implausible {len(flagged)}")
    # the flagged ones are the interesting ones: show one if its licence allows
    cols = max(1, min(len(shown), 4))
    rows_n = (len(shown) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * TILE, rows_n * (TILE + 16)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (label, image, field) in enumerate(shown):
        tile = draw_outline(image, field.image_mask(), width=max(2, image.width // 150))
        tile.thumbnail((TILE, TILE))
        x, y = (k % cols) * TILE, (k // cols) * (TILE + 16)
        canvas.paste(tile, (x + (TILE - tile.width) // 2, y + 16))
        flag = "" if field.plausible else " FLAGGED"
        draw.text((x + 3, y + 2), f"{label} {100 * field.area_fraction:.0f}%{flag}", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    args.json.write_text(json.dumps({"sources": stats, "montage": credits}, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB) and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
