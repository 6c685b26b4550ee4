"""``python -m medmodels crop-cells``: cut one crop per annotated cell out of smear photographs.

The WBC models expect a crop centred on one white cell; this makes such crops from a folder
of smear photographs and their Pascal VOC annotations (as in the BCCD data set).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medmodels.data.cell_crops import DEFAULT_CONTEXT, cell_crop, read_voc_boxes
from medmodels.data.images import load_image
from medmodels.errors import DatasetError, ImageReadError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "crop-cells",
        help="crop each annotated cell (VOC boxes) out of smear photographs",
        description="Write one PNG per box named OBJECT (default WBC): a square of CONTEXT times "
        "the box's longer side, centred on it - the input the WBC models expect.",
    )
    p.add_argument("images", type=Path, help="an image file or a folder of images")
    p.add_argument("--annotations", required=True, type=Path,
                   help="folder of VOC .xml files named like the images")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--object", default="WBC", help="VOC object name to crop (default WBC)")
    p.add_argument("--context", type=float, default=DEFAULT_CONTEXT,
                   help=f"crop side / box side (default {DEFAULT_CONTEXT})")
    p.set_defaults(func=run)
    return p


def crop_folder(images: Path, annotations: Path, out: Path, object_name: str = "WBC",
                context: float = DEFAULT_CONTEXT) -> tuple[list[Path], list[str]]:
    """Crop every ``object_name`` box; returns (written files, one line per image skipped)."""
    if context < 1:
        raise DatasetError("--context must be at least 1 (the crop must hold the whole box).")
    files = [images] if images.is_file() else sorted(
        p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
    if not files:
        raise DatasetError(f"{images}: no image files found.")
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for path in files:
        xml = annotations / f"{path.stem}.xml"
        if not xml.is_file():
            skipped.append(f"{path.name}: no annotation {xml.name}")
            continue
        boxes = read_voc_boxes(xml, object_name)
        if not boxes:
            skipped.append(f"{path.name}: no {object_name} box")
            continue
        try:
            image = load_image(path)
        except ImageReadError as err:
            skipped.append(f"{path.name}: {err.reason}")
            continue
        for k, box in enumerate(boxes):
            target = out / f"{path.stem}_{object_name.lower()}{k}.png"
            cell_crop(image, box, context).save(target)
            written.append(target)
    return written, skipped


def run(args: argparse.Namespace) -> int:
    written, skipped = crop_folder(args.images, args.annotations, args.out, args.object, args.context)
    for line in skipped:
        log.warning("skipped %s", line)
    print(f"{len(written)} crops written to {args.out}; {len(skipped)} images skipped")
    return 0
