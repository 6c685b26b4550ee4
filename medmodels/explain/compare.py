"""Agreement between two attribution maps (teacher vs student, original vs randomised)."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from medmodels.explain.baselines import ExplainError


def _resized(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear resampling of a 2-D map onto ``shape`` (both cover the whole input image)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(m, dtype=torch.float64)[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two maps as flat vectors on one grid.

    Models of one task may read different input sizes (the malaria 3-layer net reads 80 px,
    VGG-16 64 px); each map covers the whole image, so the smaller map is resampled onto
    the larger one's grid before pixels are compared.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        if a.ndim != 2 or b.ndim != 2:
            raise ExplainError(f"Cannot compare maps of shapes {a.shape} and {b.shape}.")
        if a.size < b.size:
            a = _resized(a, b.shape)
        else:
            b = _resized(b, a.shape)
    return a.ravel(), b.ravel()


def map_rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape.

    A constant map ranks nothing, so its correlation with anything is reported as 0
    (no shared ordering) rather than NaN.
    """
    x, y = _pair(a, b)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rho = spearmanr(x, y).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def topk_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    """Intersection over union of the top ``fraction`` of pixels of each map."""
    if not 0.0 < fraction <= 1.0:
        raise ExplainError(f"fraction must be in (0, 1], got {fraction}.")
    x, y = _pair(a, b)
    k = max(1, int(round(fraction * x.size)))
    top_a = set(np.argpartition(-x, k - 1)[:k].tolist())
    top_b = set(np.argpartition(-y, k - 1)[:k].tolist())
    return len(top_a & top_b) / len(top_a | top_b)
