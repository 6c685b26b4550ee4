"""Prediction and latency measurement, shared by the CLI, evaluation, training and the dashboard."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from medmodels.data.transforms import preprocess_batch
from medmodels.zoo.registry import ModelEntry, Preprocess


@torch.inference_mode()
def predict_proba(model: nn.Module, batch: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """Softmax probabilities [N, C] for a preprocessed batch, in chunks to bound memory.

    Takes the model's lock: a model shared between dashboard sessions may at the same moment
    carry an explanation's hooks, which must not see (or be disturbed by) this forward pass.
    """
    from medmodels.explain.guard import model_lock

    with model_lock(model):
        model.eval()
        outs = [torch.softmax(model(batch[i : i + chunk]).float(), dim=1)
                for i in range(0, len(batch), chunk)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True)
class Prediction:
    predicted_class: str
    probability: float
    probabilities: dict[str, float]


def predict_images(model: nn.Module, entry: ModelEntry, images: Sequence[Image.Image]) -> list[Prediction]:
    probs = predict_proba(model, preprocess_batch(list(images), entry.preprocess))
    preds = []
    for row in probs:
        k = int(row.argmax())
        preds.append(Prediction(entry.classes[k], float(row[k]),
                                {c: float(p) for c, p in zip(entry.classes, row)}))
    return preds


def predict_in_batches(
    model: nn.Module,
    entry: ModelEntry,
    load: Callable[[int], Image.Image],
    n: int,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Probabilities for ``n`` images fetched by ``load(i)``, decoding one batch at a time."""
    rows = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        rows.append(predict_proba(model, preprocess_batch([load(i) for i in idx], entry.preprocess)))
        if progress:
            progress(min(n, start + batch_size), n)
    return np.concatenate(rows) if rows else np.zeros((0, len(entry.classes)), dtype=np.float32)


@torch.inference_mode()
def time_inference(
    model: nn.Module,
    pre: Preprocess,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 5,
    min_seconds: float = 0.2,
) -> dict[str, float]:
    """CPU milliseconds per image at each batch size (median over repeats, after a warm-up)."""
    model.eval()
    result: dict[str, float] = {}
    for bs in batch_sizes:
        x = torch.randn(bs, pre.channels, pre.input_size, pre.input_size)
        model(x)  # warm-up: allocator, kernels
        samples = []
        for _ in range(repeats):
            t0, runs = time.perf_counter(), 0
            while True:
                model(x)
                runs += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_seconds / repeats or runs >= 50:
                    break
            samples.append(elapsed / runs / bs * 1000.0)
        result[f"ms_per_image_batch{bs}"] = float(np.median(samples))
    return result
