"""Every explanation method on every registered architecture, and what explain leaves behind.

Each architecture runs once (deduplicated by ``entry.arch``) at its input size with batch 2
and cheap settings: 4 IG steps, 2 SmoothGrad samples, and an occlusion window of half the
side (4 occluded positions), so the whole zoo is covered in well under a minute of CPU.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from medmodels.explain import (
    METHODS,
    ExplainError,
    ExplainSettings,
    explain,
    hooks_left,
    occlusion_geometry,
)
from medmodels.zoo.registry import ModelEntry, Preprocess, build_arch, count_parameters, list_models

ARCH_ENTRIES = list({e.arch: e for e in list_models()}.values())
CHEAP = dict(ig_steps=4, smoothgrad_samples=2, internal_batch_size=8)
CHEAP_METHODS = ("gradcam", "saliency")
HEAVY_PARAMETERS = 10_000_000


def _cheap(entry: ModelEntry, **kw: object) -> ExplainSettings:
    half = entry.preprocess.input_size // 2
    return ExplainSettings(occlusion_window=half, occlusion_stride=half, **{**CHEAP, **kw})


def _state(model: nn.Module) -> dict[str, object]:
    return {
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": hooks_left(model),
    }


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_MODELS: dict[str, nn.Module] = {}


def _model(entry: ModelEntry) -> nn.Module:
    if entry.arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[entry.arch] = build_arch(entry).eval()
    return _MODELS[entry.arch]


def _cases() -> list:
    """(architecture, method) pairs; multi-pass methods on >10M-parameter nets are slow."""
    cases = []
    for entry in ARCH_ENTRIES:
        with torch.device("meta"):  # counts parameters without allocating them
            heavy = count_parameters(build_arch(entry)) > HEAVY_PARAMETERS
        for method in METHODS:
            slow = heavy and method not in CHEAP_METHODS
            marks = [pytest.mark.slow] if slow else []
            cases.append(pytest.param(entry, method, marks=marks, id=f"{entry.arch}-{method}"))
    return cases


@pytest.mark.parametrize(("entry", "method"), _cases())
def test_every_method_on_every_architecture(entry: ModelEntry, method: str) -> None:
    model = _model(entry)
    before = _state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    size = entry.preprocess.input_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    result = explain(model, entry, x, None, method, _cheap(entry))
    assert result.maps.shape == (2, size, size)
    assert result.maps.dtype == np.float32
    assert np.isfinite(result.maps).all()
    assert result.target.shape == (2,) and result.probs.shape == (2,)
    assert ((result.probs >= 0) & (result.probs <= 1)).all()
    assert _state(model) == before, f"{method} left the model changed"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_teacher_gives_a_map_per_backbone_and_the_fused_one() -> None:
    entry = next(e for e in ARCH_ENTRIES if e.family == "teacher")
    model = _model(entry)
    size = entry.preprocess.input_size
    result = explain(model, entry, torch.randn(2, 3, size, size), None, "gradcam",
                     ExplainSettings(cam_layer="all"))
    layer_maps = result.extra["layer_maps"]
    assert set(layer_maps) == set(entry.cam_layers)
    for label, m in layer_maps.items():
        assert m.shape == (2, size, size) and np.isfinite(m).all(), label
    np.testing.assert_array_equal(result.maps, layer_maps[next(iter(entry.cam_layers))])
    assert hooks_left(model) == 0


class SmallNet(nn.Module):
    """Conv net with in-place ReLUs and a reused activation module (both break naive hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


SMALL_ENTRY = ModelEntry(
    task="toy", name="small", arch="small", title="Small", description="", paper="",
    preprocess=Preprocess(input_size=16), cam_layers={"conv2": "conv2", "conv1": "conv1"},
    family="test",
)


@pytest.fixture
def small() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_inplace_relus_are_handled_and_restored(small: SmallNet, method: str) -> None:
    x = torch.randn(3, 3, 16, 16)
    small.train()  # a caller's mode must come back as it was
    result = explain(small, SMALL_ENTRY, x, 1, method, ExplainSettings(**CHEAP))
    assert small.relu.inplace is True
    assert small.training is True
    assert hooks_left(small) == 0
    assert all(p.requires_grad for p in small.parameters())
    assert (result.target == 1).all()
    assert np.isfinite(result.maps).all()


def test_explain_works_inside_inference_mode(small: SmallNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        result = explain(small, SMALL_ENTRY, x, None, "gradcam")
    assert np.abs(result.maps).sum() > 0


def test_predicted_class_is_the_default_target(small: SmallNet) -> None:
    x = torch.randn(4, 3, 16, 16)
    predicted = small(x).argmax(1).numpy()
    for method in ("gradcam", "saliency", "ig"):
        result = explain(small, SMALL_ENTRY, x, None, method, ExplainSettings(**CHEAP))
        np.testing.assert_array_equal(result.target, predicted)
        np.testing.assert_array_equal(result.extra["predicted"], predicted)


def test_single_pass_argmax_matches_an_explicit_target(small: SmallNet) -> None:
    x = torch.randn(4, 3, 16, 16)
    predicted = small(x).argmax(1)
    for method in ("gradcam", "guided_gradcam", "saliency"):
        implicit = explain(small, SMALL_ENTRY, x, None, method)
        explicit = explain(small, SMALL_ENTRY, x, predicted, method)
        np.testing.assert_allclose(implicit.maps, explicit.maps, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(implicit.probs, explicit.probs, rtol=1e-6)


def test_integrated_gradients_reports_a_small_convergence_delta(small: SmallNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    for baseline in ("black", "blur", "mean"):
        result = explain(small, SMALL_ENTRY, x, 0, "ig",
                         ExplainSettings(ig_steps=64, ig_baseline=baseline))
        assert result.signed
        raw_sum = result.raw.reshape(2, -1).sum(1)
        assert np.abs(result.extra["convergence_delta"]).max() <= 0.05 * np.abs(raw_sum).max() + 1e-4


def test_guided_gradcam_differs_from_saliency(small: SmallNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    guided = explain(small, SMALL_ENTRY, x, 0, "guided_gradcam").maps
    plain = explain(small, SMALL_ENTRY, x, 0, "saliency").maps
    assert not np.allclose(guided / guided.max(), plain / plain.max())


def test_cam_layer_can_be_chosen_by_label(small: SmallNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    first = explain(small, SMALL_ENTRY, x, 0, "gradcam", ExplainSettings(cam_layer="conv1"))
    assert first.extra["cam_layer"] == "conv1"
    with pytest.raises(ExplainError, match="no Grad-CAM layer 'nope'"):
        explain(small, SMALL_ENTRY, x, 0, "gradcam", ExplainSettings(cam_layer="nope"))


def test_user_errors_are_explained(small: SmallNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ExplainError, match="Unknown explanation method"):
        explain(small, SMALL_ENTRY, x, 0, "lime")
    with pytest.raises(ExplainError, match="takes 16x16 inputs"):
        explain(small, SMALL_ENTRY, torch.randn(1, 3, 20, 20), 0, "gradcam")
    with pytest.raises(ExplainError, match="out of range"):
        explain(small, SMALL_ENTRY, x, 7, "gradcam")
    with pytest.raises(ExplainError, match="baseline"):
        ExplainSettings(ig_baseline="white")
    assert hooks_left(small) == 0 and small.relu.inplace


def test_occlusion_window_follows_the_input_size() -> None:
    assert occlusion_geometry(64, ExplainSettings()) == (8, 4)
    assert occlusion_geometry(128, ExplainSettings()) == (16, 8)
    assert occlusion_geometry(100, ExplainSettings(occlusion_window=10, occlusion_stride=5)) == (10, 5)


def test_two_threads_on_one_model_match_sequential_results(small: SmallNet) -> None:
    x = torch.randn(2, 3, 16, 16)
    plan = ["guided_gradcam", "gradcam", "saliency", "guided_gradcam"] * 3
    expected = {m: explain(small, SMALL_ENTRY, x, 0, m).maps for m in set(plan)}
    results: list[tuple[str, np.ndarray]] = []
    errors: list[BaseException] = []

    def worker(methods: list[str]) -> None:
        try:
            for m in methods:
                results.append((m, explain(small, SMALL_ENTRY, x, 0, m).maps))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(plan,)),
               threading.Thread(target=worker, args=(plan[::-1],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 2 * len(plan)
    for m, maps in results:
        np.testing.assert_allclose(maps, expected[m], rtol=1e-5, atol=1e-8)
    assert hooks_left(small) == 0 and small.relu.inplace


def test_batches_larger_than_the_internal_batch_size(small: SmallNet) -> None:
    x = torch.randn(10, 3, 16, 16)
    settings = ExplainSettings(internal_batch_size=4, ig_steps=4, smoothgrad_samples=2,
                               occlusion_window=8, occlusion_stride=8)
    for method in ("ig", "smoothgrad", "occlusion"):
        whole = explain(small, SMALL_ENTRY, x, 0, method, settings).maps
        parts = np.concatenate([explain(small, SMALL_ENTRY, x[i : i + 5], 0, method, settings).maps
                                for i in (0, 5)])
        if method != "smoothgrad":  # noise draws depend on the batch
            np.testing.assert_allclose(whole, parts, rtol=1e-4, atol=1e-6)
        assert whole.shape == (10, 16, 16)
