"""Faithfulness, sanity check, map comparison and rendering, on models whose truth is known.

``QuadrantNet`` reads only the top-left quadrant of its input: a faithful map must rank
that quadrant first, and deleting in the map's order must hurt more than a random order.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medmodels.explain import (
    ExplainError,
    ExplainSettings,
    deletion_insertion,
    explain,
    hooks_left,
    layers_top_down,
    map_rank_correlation,
    randomisation_check,
    render_map,
    render_overlay,
    topk_iou,
)
from medmodels.zoo.registry import ModelEntry, Preprocess

SIZE = 16
PRE = Preprocess(input_size=SIZE)  # mean = std = 0.5: black is -1 after normalisation


class Mask(nn.Module):
    """Zero everything outside the top-left quadrant."""

    def __init__(self, size: int) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., : size // 2, : size // 2] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class QuadrantNet(nn.Module):
    """Class 0 logit rises with the brightness of the top-left quadrant; nothing else counts."""

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.mask = Mask(size)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 27.0)  # mean of the 3x3x3 neighbourhood, in [-1, 1]
            self.conv.bias.fill_(1.0)  # so the ReLU passes it: activation in [0, 2]
            self.fc.weight.copy_(torch.tensor([[6.0] * 4, [-6.0] * 4]) / 4.0)
            self.fc.bias.copy_(torch.tensor([-3.0, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.mask(self.relu(self.conv(x)))
        return self.fc(a.mean(dim=(2, 3)) * 4.0)  # mean over the quadrant


QUAD_ENTRY = ModelEntry(
    task="toy", name="quadrant", arch="quadrant", title="Quadrant", description="", paper="",
    preprocess=PRE, cam_layers={"masked": "mask"}, family="test",
)


def _images(n: int = 4) -> torch.Tensor:
    """Bright top-left quadrant (class 0 evidence), noise elsewhere."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1
    x[..., : SIZE // 2, : SIZE // 2] = 0.8 + 0.2 * torch.rand(n, 3, SIZE // 2, SIZE // 2, generator=g)
    return x


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("method", ["gradcam", "ig", "saliency", "occlusion", "smoothgrad"])
def test_maps_rank_the_quadrant_the_model_reads_first(method: str) -> None:
    model, x = QuadrantNet().eval(), _images()
    assert (model(x).argmax(1) == 0).all()
    settings = ExplainSettings(occlusion_window=4, occlusion_stride=2, ig_steps=16)
    result = explain(model, QUAD_ENTRY, x, 0, method, settings)
    k = SIZE * SIZE // 4
    for m in result.maps:
        top = np.argsort(-m.ravel(), kind="stable")[: k // 2]
        rows, cols = np.unravel_index(top, m.shape)
        assert ((rows < SIZE // 2) & (cols < SIZE // 2)).mean() >= 0.95, method


@pytest.mark.parametrize("method", ["gradcam", "ig", "saliency"])
def test_deletion_and_insertion_beat_random_order(method: str) -> None:
    model, x = QuadrantNet().eval(), _images()
    result = explain(model, QUAD_ENTRY, x, 0, method, ExplainSettings(ig_steps=16))
    faith = deletion_insertion(model, x, result.maps, result.target, steps=16, preprocess=PRE)
    assert (faith.deletion_auc < faith.random_deletion_auc - 0.1).all()
    assert (faith.insertion_auc > faith.random_insertion_auc + 0.1).all()
    assert faith.deletion_curve.shape == (4, 17)
    assert faith.fractions[0] == 0 and faith.fractions[-1] == 1
    # step 0 is the image itself; the last step is the black baseline, for every order
    probs = torch.softmax(model(x), 1)[:, 0].detach().numpy()
    np.testing.assert_allclose(faith.deletion_curve[:, 0], probs, rtol=1e-5)
    np.testing.assert_allclose(faith.insertion_curve[:, -1], probs, rtol=1e-5)
    np.testing.assert_allclose(faith.deletion_curve[:, -1], faith.random_deletion_curve[:, -1])
    assert hooks_left(model) == 0 and model.relu.inplace


def test_a_constant_map_scores_exactly_like_random_order() -> None:
    model, x = QuadrantNet().eval(), _images(2)
    flat = np.zeros((2, SIZE, SIZE), dtype=np.float32)
    faith = deletion_insertion(model, x, flat, 0, steps=8, preprocess=PRE, baseline="blur")
    np.testing.assert_allclose(faith.deletion_auc, faith.random_deletion_auc)
    np.testing.assert_allclose(faith.insertion_auc, faith.random_insertion_auc)


def test_faithfulness_batches_do_not_change_the_result() -> None:
    model, x = QuadrantNet().eval(), _images(3)
    maps = explain(model, QUAD_ENTRY, x, 0, "saliency").maps
    one = deletion_insertion(model, x, maps, 0, steps=5, preprocess=PRE, batch_size=1)
    many = deletion_insertion(model, x, maps, 0, steps=5, preprocess=PRE, batch_size=1000)
    np.testing.assert_allclose(one.deletion_curve, many.deletion_curve, rtol=1e-5)
    np.testing.assert_allclose(one.random_insertion_auc, many.random_insertion_auc, rtol=1e-5)


def test_faithfulness_rejects_maps_of_the_wrong_shape() -> None:
    model, x = QuadrantNet().eval(), _images(2)
    with pytest.raises(ExplainError, match="do not match"):
        deletion_insertion(model, x, np.zeros((2, 8, 8)), 0)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


TINY_ENTRY = ModelEntry(
    task="toy", name="tiny", arch="tiny", title="Tiny", description="", paper="",
    preprocess=PRE, cam_layers={"conv2": "features.4"}, family="test",
)


def test_layers_are_listed_from_the_classifier_down() -> None:
    torch.manual_seed(0)
    names = layers_top_down(TinyCNN(), torch.randn(1, 3, SIZE, SIZE))
    assert names == ["classifier.3", "classifier.1", "features.3", "features.2", "features.0"]


@pytest.mark.parametrize("method", ["gradcam", "saliency", "ig"])
def test_randomisation_changes_the_map_and_not_the_model(method: str) -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, SIZE, SIZE)
    result = randomisation_check(model, TINY_ENTRY, x, None, method, ExplainSettings(ig_steps=8))
    assert result.spearman.shape == (5, 3)
    assert result.randomised_maps.shape == (5, 3, SIZE, SIZE)
    assert result.mean_spearman[-1] < 0.5, result.mean_spearman
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert hooks_left(model) == 0


def test_randomisation_can_stop_after_a_few_layers() -> None:
    torch.manual_seed(0)
    result = randomisation_check(TinyCNN().eval(), TINY_ENTRY, torch.randn(2, 3, SIZE, SIZE), 1,
                                 "gradcam", layers=2)
    assert result.layer_names == ["classifier.3", "classifier.1"]
    assert (result.original.target == 1).all()


def test_map_comparisons() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    assert map_rank_correlation(a, a) == pytest.approx(1.0)
    assert map_rank_correlation(a, -a) == pytest.approx(-1.0)
    assert map_rank_correlation(a, np.zeros_like(a)) == 0.0
    assert topk_iou(a, a, 0.1) == 1.0
    b = np.zeros((8, 8))
    b[:4] = 1 + rng.random((4, 8))
    c = np.zeros((8, 8))
    c[4:] = 1 + rng.random((4, 8))
    assert topk_iou(b, c, 0.25) == 0.0
    with pytest.raises(ExplainError, match="shapes"):
        map_rank_correlation(a, np.zeros((3, 4, 4)))


def test_maps_of_models_with_different_input_sizes_are_compared_on_one_grid() -> None:
    small = np.zeros((8, 8))
    small[:4, :4] = 1.0  # top-left quarter, as a 64 px model would see it
    large = np.zeros((10, 10))
    large[:5, :5] = 1.0  # the same quarter on an 80 px model's grid
    assert map_rank_correlation(small, large) > 0.8 and map_rank_correlation(large, small) > 0.8
    assert topk_iou(small, large, 0.25) > 0.7
    elsewhere = np.zeros((10, 10))
    elsewhere[5:, 5:] = 1.0
    assert topk_iou(small, elsewhere, 0.25) == 0.0


def test_overlay_blends_the_map_over_the_image() -> None:
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    attr = np.zeros((16, 16), dtype=np.float32)
    attr[:8, :8] = 1.0  # resized to the image
    out = render_overlay(Image.fromarray(image), attr, colormap="jet", opacity=0.5)
    arr = np.asarray(out)
    assert out.size == (32, 32) and out.mode == "RGB"
    assert not np.array_equal(arr[0, 0], arr[31, 31])  # hot vs cold end of the colormap
    clear = np.asarray(render_overlay(image, attr, opacity=0.0))
    np.testing.assert_array_equal(clear, image)


def test_signed_overlay_leaves_zero_attribution_untouched() -> None:
    image = np.full((8, 8, 3), 50, dtype=np.uint8)
    attr = np.zeros((8, 8), dtype=np.float32)
    attr[0, 0], attr[7, 7] = 1.0, -1.0
    arr = np.asarray(render_overlay(image, attr, signed=True, opacity=1.0, clip_percentile=100))
    np.testing.assert_array_equal(arr[4, 4], [50, 50, 50])
    assert arr[0, 0, 0] > arr[0, 0, 2]  # positive: red end of RdBu_r
    assert arr[7, 7, 2] > arr[7, 7, 0]  # negative: blue end
    assert render_map(attr, signed=True).size == (8, 8)


def test_overlay_errors_are_explained() -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ExplainError, match="colormap"):
        render_overlay(image, np.zeros((8, 8)), colormap="no-such-map")
    with pytest.raises(ExplainError, match="opacity"):
        render_overlay(image, np.zeros((8, 8)), opacity=2.0)
    flat = render_overlay(image, np.full((8, 8), np.nan))  # nothing to show, still an image
    assert flat.size == (8, 8)


def test_faithfulness_defaults_to_the_predicted_class() -> None:
    model, x = QuadrantNet().eval(), _images(2)
    maps = explain(model, QUAD_ENTRY, x, None, "saliency").maps
    implicit = deletion_insertion(model, x, maps, None, steps=4, preprocess=PRE)
    explicit = deletion_insertion(model, x, maps, 0, steps=4, preprocess=PRE)
    np.testing.assert_allclose(implicit.deletion_auc, explicit.deletion_auc)
