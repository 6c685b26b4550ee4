"""Lung-field segmentation of chest X-rays: ``segment_lungs(image) -> LungField``.

The mask lives in the *padded-square frame*: the image padded to a square with black
(centred) as every X-ray model here sees it (``Preprocess.resize == "pad_square"``). An
explanation map of an X-ray classifier is in that same frame at its own input size, so the
mask is simply resized to the map (``LungField.mask_for``). ``image_mask`` crops it back
to the original image for display and the CLI.

A predicted area outside the plausible range (under 10 % or over 60 % of the image) is
flagged: the field is then not used for scores ("lung field not found; score not computed").
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from medmodels.errors import WeightsError
from medmodels.zoo.unet import LUNGS_TASK, UNET_LITE0, SegmentationEntry

log = logging.getLogger(__name__)

NOT_FOUND_NOTE = "lung field not found; score not computed"


@dataclass(frozen=True)
class LungField:
    """A predicted lung field and whether it can be trusted.

    ``probability`` [S, S] float32 in the padded-square frame (S = the model's input size);
    ``mask`` the same thresholded at 0.5; ``image_size`` (width, height) of the original.
    """

    probability: np.ndarray
    mask: np.ndarray
    image_size: tuple[int, int]
    area_fraction: float
    plausible: bool
    plausible_range: tuple[float, float]

    @property
    def note(self) -> str:
        """Empty when plausible, else the sentence shown beside any score."""
        if self.plausible:
            return ""
        lo, hi = self.plausible_range
        return (f"{NOT_FOUND_NOTE} (predicted lung area {100 * self.area_fraction:.1f} % of the image, "
                f"plausible {100 * lo:.0f}-{100 * hi:.0f} %)")

    def mask_for(self, size: int | tuple[int, int]) -> np.ndarray:
        """The mask in the padded-square frame at ``size`` (a classifier's input size)."""
        h, w = (size, size) if isinstance(size, int) else size
        if self.mask.shape == (h, w):
            return self.mask.copy()
        img = Image.fromarray(self.probability.astype(np.float32), mode="F")
        return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR)) > 0.5

    def image_mask(self) -> np.ndarray:
        """The mask on the original image ([height, width] bool), padding removed."""
        w, h = self.image_size
        side = max(w, h)
        full = self.mask_for(side)
        x0, y0 = (side - w) // 2, (side - h) // 2
        return full[y0:y0 + h, x0:x0 + w]


_CACHE: dict[Path, tuple[nn.Module, dict[str, Any]]] = {}
_LOCK = threading.Lock()


def lung_model_folder(weights_dir: Path | None = None, entry: SegmentationEntry = UNET_LITE0) -> Path:
    from medmodels.hub import HubSettings

    base = weights_dir or HubSettings.from_env().weights_dir
    return base / entry.task / entry.name


def load_lung_model(folder: Path | None = None, entry: SegmentationEntry = UNET_LITE0) -> tuple[nn.Module, dict[str, Any]]:
    """The shipped lung model (eval mode, float32) and its metrics; checked like every weight.

    Raises ``WeightsError`` when the folder, the sha256 or the architecture does not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from medmodels.hub import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, sha256_of
    from medmodels.zoo.registry import build_arch

    folder = Path(folder) if folder else lung_model_folder(entry=entry)
    with _LOCK:
        if folder in _CACHE:
            return _CACHE[folder]
        weights, config_file = folder / WEIGHTS_FILE, folder / CONFIG_FILE
        if not weights.is_file() or not config_file.is_file():
            raise WeightsError(f"No trained lung-field model in {folder} ({WEIGHTS_FILE} and {CONFIG_FILE} needed).")
        config = json.loads(config_file.read_text())
        if config.get("arch") != entry.arch or config.get("task") != entry.task:
            raise WeightsError(f"{folder}/{CONFIG_FILE} describes {config.get('task')}/{config.get('arch')}, "
                               f"not {entry.key}; refusing to load.")
        if sha256_of(weights) != config.get("sha256"):
            raise WeightsError(f"{entry.key}: {WEIGHTS_FILE} does not match the sha256 in {CONFIG_FILE}; "
                               "the file was changed or is corrupt.")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{entry.key}: {WEIGHTS_FILE} is not a valid safetensors file ({err}).") from None
        model = build_arch(entry)  # type: ignore[arg-type]
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        model.eval()
        metrics_file = folder / METRICS_FILE
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        _CACHE[folder] = (model, metrics)
        return model, metrics


def lung_model_available(folder: Path | None = None) -> bool:
    from medmodels.hub import WEIGHTS_FILE

    return ((Path(folder) if folder else lung_model_folder()) / WEIGHTS_FILE).is_file()


def prepare(images: list[Image.Image], entry: SegmentationEntry = UNET_LITE0) -> torch.Tensor:
    """Images -> the normalised [N, 3, S, S] batch the lung model takes."""
    from medmodels.data.transforms import preprocess_batch

    return preprocess_batch([im.convert("RGB") for im in images], entry.preprocess)


@torch.inference_mode()
def segment_batch(model: nn.Module, images: list[Image.Image], entry: SegmentationEntry = UNET_LITE0) -> list[LungField]:
    """One ``LungField`` per image (one forward pass for the batch)."""
    if not images:
        return []
    probs = torch.sigmoid(model(prepare(images, entry)))[:, 0].float().numpy()
    lo, hi = LUNGS_TASK.plausible_area
    out = []
    for img, p in zip(images, probs):
        mask = p > 0.5
        area = _area_in_image(mask, img.size)
        out.append(LungField(probability=p.astype(np.float32), mask=mask, image_size=img.size,
                             area_fraction=area, plausible=lo <= area <= hi, plausible_range=(lo, hi)))
    return out


def _area_in_image(mask: np.ndarray, image_size: tuple[int, int]) -> float:
    """Lung share of the original image (the black padding is not part of the image)."""
    w, h = image_size
    s = mask.shape[0]
    side = max(w, h)
    cw, ch = max(1, round(w * s / side)), max(1, round(h * s / side))
    x0, y0 = (s - cw) // 2, (s - ch) // 2
    return float(mask[y0:y0 + ch, x0:x0 + cw].mean())


def segment_lungs(image: Image.Image, model: nn.Module | None = None) -> LungField:
    """The lung field of one chest X-ray (any size; the shipped model unless one is given)."""
    if model is None:
        model, _ = load_lung_model()
    return segment_batch(model, [image])[0]


def outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a boolean mask (for drawing the lung outline)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)


def draw_outline(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 120),
                 width: int = 2) -> Image.Image:
    """``image`` (RGB) with the boundary of ``mask`` (same size as the image) drawn on it."""
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB")).copy()
    edge = outline(mask)
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1)
    rgb[edge] = color
    return Image.fromarray(rgb)


def _lung_crop(field: LungField, margin: float, dilate_fraction: float
               ) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """(dilated field on the image, crop box x0, y0, x1, y1 or None when there is no field)."""
    from medmodels.explain.localise import dilate

    mask = dilate(field.image_mask(), dilate_fraction)
    if not mask.any():
        return mask, None
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    my, mx = int(margin * h), int(margin * w)
    return mask, (max(int(xs.min()) - mx, 0), max(int(ys.min()) - my, 0),
                  min(int(xs.max()) + 1 + mx, w), min(int(ys.max()) + 1 + my, h))


def lung_only(image: Image.Image, field: LungField, margin: float = 0.05, dilate_fraction: float = 0.03) -> Image.Image:
    """The X-ray cropped to its lung field's bounding box (plus ``margin``) and black outside
    the slightly dilated field: the input of the lung-only experiment (issue 19).

    Raises ``ValueError`` for an implausible field (``lung_only_set`` decides to keep those);
    an empty field gives a black image.
    """
    if not field.plausible:
        raise ValueError(field.note)
    mask, box = _lung_crop(field, margin, dilate_fraction)
    if box is None:  # nothing found: nothing of the image is shown
        return Image.new("RGB", image.size)
    rgb = np.asarray(image.convert("RGB")).copy()
    rgb[~mask] = 0
    x0, y0, x1, y1 = box
    return Image.fromarray(rgb[y0:y1, x0:x1])


def lung_only_region(field: LungField, margin: float = 0.05, dilate_fraction: float = 0.03) -> np.ndarray:
    """The (undilated) lung field in the pixels of ``lung_only``'s output, for scoring its maps."""
    plain = field.image_mask()
    _, box = _lung_crop(field, margin, dilate_fraction)
    if box is None:
        return np.zeros_like(plain)
    x0, y0, x1, y1 = box
    return plain[y0:y1, x0:x1]


def lung_only_set(data: Any, batch_size: int = 8) -> Any:
    """A ``LabelledSet`` whose X-rays are replaced by their lung-only version (PNG bytes).

    Every image is kept, flagged (implausible) fields included, so that the patient-grouped
    split stays exactly that of the full-image models; an image with no lung field at all
    becomes black. Each sample's ``meta`` records ``inputs=lung_only`` and the field's area
    and plausibility.
    """
    import io
    from types import MappingProxyType

    from medmodels.data.images import load_image
    from medmodels.data.samples import LabelledSet, Sample

    model, _ = load_lung_model()
    samples = []
    items = list(data.samples)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = [load_image(s.source, s.name) for s in chunk]
        for s, image, field in zip(chunk, images, segment_batch(model, images)):
            usable = field if field.plausible else LungField(field.probability, field.mask, field.image_size,
                                                            field.area_fraction, True, field.plausible_range)
            buf = io.BytesIO()
            lung_only(image, usable).save(buf, format="PNG")
            meta = {**dict(s.meta), "inputs": "lung_only", "lung_area": f"{field.area_fraction:.4f}",
                    "lung_plausible": str(field.plausible)}
            samples.append(Sample(s.name, buf.getvalue(), s.label, s.group, MappingProxyType(meta)))
    log.info("lung-only inputs: %d images, %d with a flagged field, %d with none", len(samples),
             sum(s.meta["lung_plausible"] == "False" for s in samples),
             sum(float(s.meta["lung_area"]) == 0 for s in samples))
    return LabelledSet(samples, data.classes, tuple(data.skipped))
