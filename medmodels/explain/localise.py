"""Localisation scores: how much of a map's positive attribution falls on the anatomy that matters.

- Chest X-rays: the share inside the predicted lung field, and inside the field dilated by
  ``DILATE_FRACTION`` of the map side (lesions at the field's edge, masks that leave out
  consolidation), each next to its chance level: the region's share of the map, which is
  what a map spread evenly over the image would score.
- WBC: the share inside the labelled cell's box (the energy-based pointing game of
  Score-CAM, Wang et al. 2020), when a box is known: crops made from BCCD originals (box
  from the VOC annotation), an uploaded set with ``x0,y0,x1,y1`` CSV columns or a VOC XML
  file beside each image.

A map with no positive attribution, or a lung field the segmenter could not find
plausibly, gives no number but a note (``LocalisationScore.note``): never a silent 0 or NaN.
Maps are in the classifier's model-view frame (``medmodels.data.transforms.model_view``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medmodels.zoo.registry import Preprocess

#: The "slightly dilated" lung field grows by this share of the map's side (4 px at 128 px).
DILATE_FRACTION = 0.03
NO_POSITIVE_NOTE = "the map has no positive attribution; share not computed"
BOX_COLUMNS = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class LocalisationScore:
    """Share of positive attribution inside ``region`` (None when not computed) and its chance level."""

    region: str
    inside: float | None
    chance: float | None
    note: str = ""

    @property
    def computed(self) -> bool:
        return self.inside is not None

    @property
    def ratio(self) -> float | None:
        """inside / chance: 1 = no better than an even map; None when either is missing."""
        if self.inside is None or not self.chance:
            return None
        return self.inside / self.chance

    def text(self) -> str:
        """One line for a caption: "62 % inside the lung field (chance 24 %)" or the note."""
        if self.inside is None:
            return self.note if self.region.split()[-2:] == self.note.split()[:2] else f"{self.region}: {self.note}"
        return f"{100 * self.inside:.0f} % inside the {self.region} (chance {100 * (self.chance or 0):.0f} %)"

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "inside": self.inside, "chance": self.chance, "note": self.note}


def _fit(region: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if region.shape == shape:
        return region.astype(bool)
    img = Image.fromarray(region.astype(np.uint8) * 255)
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 127


def positive_share(attribution: np.ndarray, region: np.ndarray, name: str = "region") -> LocalisationScore:
    """Share of the map's positive mass inside ``region`` (a bool mask, resized to the map).

    Negative values (signed methods: evidence against the class) are left out; a map with no
    positive value is reported with a note instead of a division by zero.
    """
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"one map [H, W] expected, got shape {a.shape}")
    r = _fit(np.asarray(region), a.shape)
    chance = float(r.mean())
    pos = np.where(np.isfinite(a), np.clip(a, 0.0, None), 0.0)
    total = float(pos.sum())
    if not total > 0.0:
        return LocalisationScore(name, None, chance, NO_POSITIVE_NOTE)
    return LocalisationScore(name, float(pos[r].sum() / total), chance)


def dilate(mask: np.ndarray, fraction: float = DILATE_FRACTION) -> np.ndarray:
    """``mask`` grown by ``fraction`` of its longer side (at least one pixel), disc-shaped."""
    from scipy import ndimage

    radius = max(1, int(round(fraction * max(mask.shape))))
    if not mask.any():
        return mask.copy()
    # every pixel within ``radius`` of the mask: a disc dilation, 2-3x faster through the EDT
    return ndimage.distance_transform_edt(~mask) <= radius


def lung_region(field: Any, shape: tuple[int, int], pre: Preprocess | None = None) -> np.ndarray:
    """The lung mask in a classifier's model-view frame (padded square, or squashed image)."""
    if pre is None or pre.resize == "pad_square":
        return field.mask_for(shape)
    return _fit(field.image_mask(), shape)


def lung_scores(attribution: np.ndarray, field: Any, pre: Preprocess | None = None
                ) -> tuple[LocalisationScore, LocalisationScore]:
    """(inside the lung field, inside the dilated field) for one map and a ``LungField``.

    ``pre`` is the classifier's preprocessing (None: padded square, as every X-ray model here).
    An implausible field gives two scores without numbers, with the field's note.
    """
    if not field.plausible:
        return (LocalisationScore("lung field", None, None, field.note),
                LocalisationScore("dilated lung field", None, None, field.note))
    mask = lung_region(field, attribution.shape, pre)
    return (positive_share(attribution, mask, "lung field"),
            positive_share(attribution, dilate(mask), "dilated lung field"))


# --------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class PixelBox:
    """A box ``[x0, x1) x [y0, y1)`` in image pixels (float corners allowed)."""

    x0: float
    y0: float
    x1: float
    y1: float


def box_problem(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> str | None:
    """Why a box cannot be used on a ``width`` x ``height`` image, or None when it can."""
    values = (x0, y0, x1, y1)
    if not all(math.isfinite(v) for v in values):
        return "a box corner is not a number"
    if x1 <= x0 or y1 <= y0:
        return f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has x1 <= x0 or y1 <= y0"
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width} x {height} image"
    return None


def box_from_meta(meta: Mapping[str, str], image_size: tuple[int, int]) -> tuple[PixelBox | None, str | None]:
    """The box of an uploaded row's ``x0,y0,x1,y1`` columns: (box, None), (None, problem) or (None, None)."""
    lower = {k.strip().lower(): v for k, v in meta.items()}
    if not any(c in lower for c in BOX_COLUMNS):
        return None, None
    if not all(str(lower.get(c, "")).strip() for c in BOX_COLUMNS):
        return None, "the row does not give all four box columns x0, y0, x1, y1"
    try:
        x0, y0, x1, y1 = (float(str(lower[c]).strip()) for c in BOX_COLUMNS)
    except ValueError:
        return None, "a box column (x0, y0, x1, y1) is not a number"
    problem = box_problem(x0, y0, x1, y1, *image_size)
    return (None, problem) if problem else (PixelBox(x0, y0, x1, y1), None)


def box_from_voc(xml: Path, image_size: tuple[int, int], name: str = "WBC") -> tuple[PixelBox | None, str | None]:
    """The single ``name`` box of a VOC file beside an image (several or none: a problem)."""
    from medmodels.data.cell_crops import read_voc_boxes
    from medmodels.errors import DatasetError

    try:
        boxes = read_voc_boxes(xml, name)
    except DatasetError as err:
        return None, str(err)
    if len(boxes) != 1:
        return None, f"{xml.name} holds {len(boxes)} {name} boxes (one is needed to know the labelled cell)"
    b = boxes[0]
    problem = box_problem(b.xmin, b.ymin, b.xmax, b.ymax, *image_size)
    return (None, problem) if problem else (PixelBox(b.xmin, b.ymin, b.xmax, b.ymax), None)


def box_in_crop(box: Any, image_size: tuple[int, int], context: float | None = None) -> PixelBox:
    """Where a VOC ``Box`` of an original lies inside its cell crop (``cell_crops.cell_crop``)."""
    from medmodels.data.cell_crops import DEFAULT_CONTEXT, square_around

    left, top, right, bottom = square_around(box, image_size, context or DEFAULT_CONTEXT)
    side = right - left
    return PixelBox(max(box.xmin - left, 0), max(box.ymin - top, 0),
                    min(box.xmax - left, side), min(box.ymax - top, side))


def box_to_view(box: PixelBox, image_size: tuple[int, int], pre: Preprocess) -> PixelBox:
    """The box in the model-view frame (squash, or pad to square) at ``pre.input_size``."""
    w, h = image_size
    s = pre.input_size
    if pre.resize == "pad_square":
        side = max(w, h)
        ox, oy = (side - w) // 2, (side - h) // 2
        k = s / side
        return PixelBox((box.x0 + ox) * k, (box.y0 + oy) * k, (box.x1 + ox) * k, (box.y1 + oy) * k)
    kx, ky = s / w, s / h
    return PixelBox(box.x0 * kx, box.y0 * ky, box.x1 * kx, box.y1 * ky)


def box_mask(box: PixelBox, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside ``box`` (at least the one pixel holding its centre)."""
    h, w = shape
    ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    mask = (xs >= box.x0) & (xs <= box.x1) & (ys >= box.y0) & (ys <= box.y1)
    if not mask.any():
        cx = min(max(int((box.x0 + box.x1) / 2), 0), w - 1)
        cy = min(max(int((box.y0 + box.y1) / 2), 0), h - 1)
        mask[cy, cx] = True
    return mask


def box_score(attribution: np.ndarray, box_view: PixelBox) -> LocalisationScore:
    """Energy-based pointing game: the positive share inside the cell box (model-view frame)."""
    return positive_share(attribution, box_mask(box_view, attribution.shape), "cell box")


# --------------------------------------------------------------------------- bundled examples

EXAMPLE_BOXES = Path(__file__).resolve().parents[2] / "examples" / "wbc_boxes.csv"


def pixel_digest(image: Image.Image) -> str:
    """SHA-1 of the RGB pixels: ties a stored box to exactly one image, whatever its file name."""
    import hashlib

    return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()


def bundled_box(image: Image.Image, table: Path = EXAMPLE_BOXES) -> PixelBox | None:
    """The labelled cell's box of a bundled WBC example (matched by its pixels), else None."""
    import csv

    if not table.is_file():
        return None
    digest = pixel_digest(image)
    with table.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["pixel_sha1"] == digest:
                return PixelBox(*(float(row[c]) for c in BOX_COLUMNS))
    return None


def map_scores(attribution: np.ndarray, pre: Preprocess, modality: str, *, field: Any = None,
               box: PixelBox | None = None, image_size: tuple[int, int] | None = None) -> list[LocalisationScore]:
    """The localisation scores that apply to one map: lungs for X-rays, the cell box when known.

    ``field`` is the image's ``LungField`` (X-rays); ``box`` the labelled cell's box in image
    pixels with ``image_size`` (microscopy). Nothing applies: an empty list.
    """
    if modality == "x-ray" and field is not None:
        return list(lung_scores(attribution, field, pre))
    if box is not None and image_size is not None:
        return [box_score(attribution, box_to_view(box, image_size, pre))]
    return []
