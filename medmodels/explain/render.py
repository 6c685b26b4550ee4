"""Heat-map overlays as images: no pyplot, no figure, no global state.

Matplotlib is used only for its colormap tables. Unsigned maps are scaled from their
minimum to a high percentile (one hot pixel must not wash out the rest); signed maps
(Integrated Gradients, Occlusion) are scaled symmetrically around zero on a diverging
colormap, and their opacity follows the magnitude so that zero leaves the image visible.
"""
from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

from medmodels.explain.baselines import ExplainError

DEFAULT_COLORMAP = "jet"
DEFAULT_SIGNED_COLORMAP = "RdBu_r"
# Offered by the dashboard; any matplotlib colormap name works.
COLORMAPS = ("jet", "viridis", "inferno", "magma", "turbo")
SIGNED_COLORMAPS = ("RdBu_r", "coolwarm", "bwr", "PiYG")


def colormap_table(name: str) -> np.ndarray:
    """[256, 3] uint8 lookup table of a matplotlib colormap."""
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ExplainError(
            f"Unknown colormap {name!r}; use a matplotlib name such as jet, viridis or RdBu_r."
        ) from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)


def _as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    arr = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ExplainError(f"render_overlay needs an HxWx3 image; got shape {arr.shape}.")
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return arr[..., :3]


def _fit(attribution: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    attr = np.nan_to_num(np.asarray(attribution, dtype=np.float32))
    if attr.ndim != 2:
        raise ExplainError(f"render_overlay needs a 2-D map; got shape {attr.shape}.")
    if attr.shape != shape:
        resized = Image.fromarray(np.ascontiguousarray(attr)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        attr = np.asarray(resized, dtype=np.float32)
    return attr


def scale_map(attribution: np.ndarray, clip_percentile: float, signed: bool) -> np.ndarray:
    """Map values to [0, 1] (unsigned) or [-1, 1] (signed), clipping at the percentile."""
    if not 0.0 < clip_percentile <= 100.0:
        raise ExplainError(f"clip_percentile must be in (0, 100], got {clip_percentile}.")
    attr = np.asarray(attribution, dtype=np.float64)
    if signed:
        top = np.percentile(np.abs(attr), clip_percentile)
        return np.clip(attr / top, -1.0, 1.0) if top > 0 else np.zeros_like(attr)
    low = attr.min()
    top = np.percentile(attr, clip_percentile)
    return np.clip((attr - low) / (top - low), 0.0, 1.0) if top > low else np.zeros_like(attr)


def render_overlay(
    image: Image.Image | np.ndarray,
    attribution: np.ndarray,
    *,
    colormap: str | None = None,
    opacity: float = 0.5,
    clip_percentile: float = 99.0,
    signed: bool = False,
) -> Image.Image:
    """The image with the attribution map blended on top, as an RGB PIL image.

    ``colormap=None`` picks jet for unsigned and RdBu_r (centred at 0) for signed maps.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ExplainError(f"opacity must be between 0 and 1, got {opacity}.")
    rgb = _as_rgb(image).astype(np.float32)
    attr = _fit(attribution, rgb.shape[:2])
    scaled = scale_map(attr, clip_percentile, signed)
    table = colormap_table(colormap or (DEFAULT_SIGNED_COLORMAP if signed else DEFAULT_COLORMAP))
    if signed:
        index = np.round((scaled + 1.0) * 127.5).astype(np.int64)
        alpha = opacity * np.abs(scaled)[..., None]
    else:
        index = np.round(scaled * 255.0).astype(np.int64)
        alpha = np.full(scaled.shape + (1,), opacity)
    heat = table[np.clip(index, 0, 255)].astype(np.float32)
    blended = (1.0 - alpha) * rgb + alpha * heat
    return Image.fromarray(np.clip(blended, 0, 255).round().astype(np.uint8))


def render_map(
    attribution: np.ndarray,
    *,
    colormap: str | None = None,
    clip_percentile: float = 99.0,
    signed: bool = False,
) -> Image.Image:
    """The attribution map alone, coloured (for side-by-side views)."""
    scaled = scale_map(np.nan_to_num(np.asarray(attribution, np.float32)), clip_percentile, signed)
    table = colormap_table(colormap or (DEFAULT_SIGNED_COLORMAP if signed else DEFAULT_COLORMAP))
    index = np.round(((scaled + 1.0) * 127.5) if signed else scaled * 255.0).astype(np.int64)
    return Image.fromarray(table[np.clip(index, 0, 255)])
