"""explain_image: one call per (image, model) gives every map with its scores, and it pickles;
Evaluation.at / curves: the operating point and curves the Evaluate page lays out."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from medmodels.evaluate import Evaluation, distinct_samples
from medmodels.explain import ExplainSettings
from medmodels.explain.image import explain_image
from medmodels.explain.localise import PixelBox
from medmodels.metrics import compute_metrics
from medmodels.zoo.registry import create_model, get_entry


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_explain_image_holds_maps_scores_and_overlays_and_pickles() -> None:
    torch.manual_seed(0)
    entry = get_entry("wbc", "wbc_cnn")
    model = create_model("wbc", "wbc_cnn").eval()
    image = _image()
    box = PixelBox(10, 10, 60, 50)
    result = explain_image(model, entry, image, ("gradcam", "saliency"), ExplainSettings(),
                           faithfulness_steps=4, box=box)
    size = entry.preprocess.input_size
    assert result.view.size == (size, size) and set(result.maps) == {"gradcam", "saliency"}
    for method, m in result.maps.items():
        assert m.map.shape == (size, size) and np.isfinite(m.map).all()
        assert set(m.faithfulness_numbers()) == {"deletion_auc", "insertion_auc", "random_deletion_auc",
                                                 "random_insertion_auc"}
        assert len(m.localisation) == 1 and m.localisation[0].region == "cell box"
        assert result.overlay(method).size == result.view.size
    numbers = result.numbers()
    assert numbers["gradcam"]["target"] in entry.classes and "deletion_auc" in numbers["gradcam"]
    again = pickle.loads(pickle.dumps(result))
    assert np.array_equal(again.maps["gradcam"].map, result.maps["gradcam"].map)
    # the same map as explain() on the same preprocessed tensor
    from medmodels.data.transforms import preprocess_batch
    from medmodels.explain import explain

    direct = explain(model, entry, preprocess_batch([image], entry.preprocess), method="gradcam")
    assert np.allclose(direct.maps[0], result.maps["gradcam"].map)


def test_explain_image_without_faithfulness_or_region_and_a_missing_lung_field() -> None:
    entry = get_entry("wbc", "wbc_cnn")
    model = create_model("wbc", "wbc_cnn").eval()
    plain = explain_image(model, entry, _image(), ("saliency",))
    assert plain.maps["saliency"].faithfulness is None and plain.maps["saliency"].localisation == ()
    noted = explain_image(model, entry, _image(), ("saliency",), field="lung model not available")
    assert noted.maps["saliency"].localisation[0].note == "lung model not available"


def _evaluation() -> Evaluation:
    entry = get_entry("malaria", "shallow_cnn1")
    k = entry.task_spec.positive_index
    labels = np.array([0, 1, 1, 0, 1, 0])
    score = np.array([0.9, 0.2, 0.6, 0.3, 0.4, 0.8])  # P(positive class)
    probs = np.zeros((6, 2))
    probs[:, k], probs[:, 1 - k] = score, 1 - score
    report = compute_metrics(labels, probs, entry.classes, k, 0.5)
    return Evaluation(entry, list("abcdef"), [None] * 6, labels, probs, report)


def test_evaluation_at_a_threshold_matches_compute_metrics_and_pickles() -> None:
    ev = _evaluation()
    k = ev.entry.task_spec.positive_index
    for threshold in (0.1, 0.5, 0.85):
        expected = compute_metrics(ev.labels, ev.probs, ev.entry.classes, k, threshold)
        assert ev.at(threshold).report == expected
    again = pickle.loads(pickle.dumps(ev.at(0.3)))
    assert again.entry == ev.entry and again.report == ev.at(0.3).report


def test_evaluation_curves_mark_the_operating_point() -> None:
    ev = _evaluation().at(0.5)
    curves = ev.curves()
    m = ev.report.metrics
    assert curves.label == ev.entry.task_spec.positive_class
    assert curves.roc_point == (m["fpr"], m["tpr"]) and curves.pr_point == (m["tpr"], m["precision"])
    assert curves.roc.auc == pytest.approx(m["roc_auc"])


def test_distinct_samples_keeps_each_file_once() -> None:
    from medmodels.data.samples import Sample

    samples = [Sample("a", b"x", 0), Sample("b", b"y", 1), Sample("c", b"x", 1)]
    unique, rows = distinct_samples(samples)
    assert [s.name for s in unique] == ["a", "b"] and rows.tolist() == [0, 1, 0]
