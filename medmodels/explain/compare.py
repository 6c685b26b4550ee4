"""Agreement between two attribution maps (teacher vs student, original vs randomised)."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from medmodels.explain.baselines import ExplainError


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ExplainError(f"Cannot compare maps of shapes {a.shape} and {b.shape}.")
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
