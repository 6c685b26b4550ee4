"""Crops of one annotated cell out of a smear photograph (VOC bounding boxes).

The WBC subtype label of a BCCD smear refers to its single stained white cell, which covers
about 5% of the 640x480 photograph. A small CNN trained from scratch on a few hundred whole
photographs has to find that cell before it can classify it; on a crop centred on the cell it
only has to classify. The WBC models here are trained and evaluated on such crops, and expect
one at inference (the shipped examples are crops made by :func:`cell_crop`).
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from medmodels.errors import DatasetError

#: The crop's side is this many times the longer side of the box: the cell plus a rim of
#: neighbouring red cells, as in the Kaggle crops' framing.
DEFAULT_CONTEXT = 1.3


@dataclass(frozen=True)
class Box:
    """A pixel box ``[xmin, xmax) x [ymin, ymax)`` with its VOC object name."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int

    @property
    def width(self) -> int:
        return self.xmax - self.xmin

    @property
    def height(self) -> int:
        return self.ymax - self.ymin


def read_voc_boxes(path: Path, name: str | None = None) -> list[Box]:
    """The boxes of a Pascal VOC annotation file, optionally only those called ``name``."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{path.name}: not a readable VOC annotation ({exc}).") from exc
    boxes = []
    for obj in root.iter("object"):
        label = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if bnd is None or (name is not None and label != name):
            continue
        try:
            coords = [int(float(bnd.findtext(k) or "")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as exc:
            raise DatasetError(f"{path.name}: a {label} box has a non-numeric corner.") from exc
        boxes.append(Box(label, *coords))
    return boxes


def square_around(box: Box, image_size: tuple[int, int], context: float = DEFAULT_CONTEXT
                  ) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) centred on ``box``, shifted to stay inside the image.

    The side is ``context`` times the box's longer side, capped at the image's shorter side.
    """
    width, height = image_size
    side = min(int(round(context * max(box.width, box.height))), width, height)
    cx, cy = (box.xmin + box.xmax) / 2, (box.ymin + box.ymax) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def cell_crop(image: Image.Image, box: Box, context: float = DEFAULT_CONTEXT) -> Image.Image:
    """The square crop of ``image`` centred on ``box`` (see :func:`square_around`)."""
    return image.crop(square_around(box, image.size, context))


def png_bytes(image: Image.Image) -> bytes:
    """Lossless in-memory encoding, so a crop can travel as a ``Sample`` source."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
