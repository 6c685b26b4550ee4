"""Untrained model folders, for the dashboard's tests and the load benchmark.

They let the UI be exercised on a machine that has no trained weights yet: the folder has
the same four files a training run writes, with random weights, metrics measured on the
bundled examples and a card that says plainly that the model is untrained.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_untrained_folder(weights_dir: Path, task: str, name: str, seed: int = 0) -> Path:
    """``weights_dir/<task>/<name>/`` with random weights; returns the folder."""
    from medmodels.data.datasets import read_labelled_set
    from medmodels.data.images import load_image
    from medmodels.data.transforms import preprocess_batch
    from medmodels.hub import save_model_folder
    from medmodels.inference import predict_proba, time_inference
    from medmodels.metrics import compute_metrics
    from medmodels.zoo.registry import build_arch, count_parameters, get_entry

    entry = get_entry(task, name)
    torch.manual_seed(seed)
    model = build_arch(entry).eval()
    examples = read_labelled_set(Path(__file__).resolve().parents[1] / "examples" / task, entry.classes)
    images = [load_image(s.source, s.name) for s in examples.samples]
    probs = predict_proba(model, preprocess_batch(images, entry.preprocess))
    report = compute_metrics(
        [s.label for s in examples.samples], probs, entry.classes, entry.task_spec.positive_index
    )
    from medmodels.record import (
        DataSummary, InferenceTime, RunRecord, SplitMetrics, SplitSummary, TrainingSummary,
    )

    record = RunRecord(
        task=task, name=name, model=name, arch=entry.arch, untrained=True,
        parameters=count_parameters(model),
        data=DataSummary(source="bundled examples", n_images=len(images), n_groups=None,
                         class_counts={c: sum(s.label == k for s in examples.samples)
                                       for k, c in enumerate(entry.classes)}),
        split=SplitSummary(mode="grouped", by=None, fractions=[0.0, 0.0, 1.0], seed=seed),  # no held-out groups
        training=TrainingSummary(seconds=0.0, best_epoch=0, epochs_run=0,
                                 stop_reason="not trained (random weights for tests)"),
        test=SplitMetrics.from_report(report),
        inference_ms=InferenceTime(threads=None, **time_inference(
            model, entry.preprocess, batch_sizes=(1,), repeats=2, min_seconds=0.05)),
    )
    card = (
        f"# {entry.title} ({entry.key}), untrained\n\nRandom weights written for tests and "
        "benchmarks; its predictions mean nothing.\n"
    )
    return save_model_folder(model, entry, Path(weights_dir) / task / name, record=record, card=card)
