"""Attribution methods, all through Captum, behind one function: ``explain``.

Every method returns a map at input resolution, whatever its native output (a coarse CAM,
per-channel gradients). Each call runs under ``model_guard``: one attribution at a time per
model, no in-place activations during the call, every hook and flag restored afterwards.

Where the caller leaves the target class open, single-pass methods (Grad-CAM, Guided
Grad-CAM, Saliency) explain the arg-max logit of the very forward pass they already run, so
they cost no extra forward; multi-pass methods (IG, SmoothGrad, Occlusion) first run one
forward to fix the class, because their perturbed inputs may change the arg-max.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
from captum.attr import (
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from medmodels.explain.baselines import BASELINES, ExplainError, make_baseline
from medmodels.explain.guard import model_guard
from medmodels.zoo.registry import ModelEntry

log = logging.getLogger(__name__)

# Captum warns on every Guided Backprop call that it sets (and removes) ReLU hooks.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")

METHODS: Mapping[str, str] = MappingProxyType(
    {
        "gradcam": "Grad-CAM",
        "guided_gradcam": "Guided Grad-CAM",
        "ig": "Integrated Gradients",
        "saliency": "Saliency",
        "smoothgrad": "SmoothGrad",
        "occlusion": "Occlusion",
    }
)
SIGNED_METHODS = frozenset({"ig", "occlusion"})
ALL_LAYERS = "all"


@dataclass(frozen=True)
class ExplainSettings:
    """Method-specific knobs; each method reads only its own.

    ``internal_batch_size`` is the number of rows per model call for the multi-pass methods
    (IG steps, SmoothGrad noise samples, occluded copies): bounded memory, and on CPU also
    the fastest setting, because very large batches fall out of cache.
    ``smoothgrad_stdev`` is the noise level as a fraction of the pixel range (SmoothGrad
    paper); ``seed`` fixes that noise, so a map is reproducible.
    """

    ig_steps: int = 32
    ig_baseline: str = "black"
    internal_batch_size: int = 16
    smoothgrad_samples: int = 16
    smoothgrad_stdev: float = 0.15
    smoothgrad_base: str = "saliency"
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    cam_layer: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ig_baseline not in BASELINES:
            raise ExplainError(
                f"Unknown baseline {self.ig_baseline!r}; choose one of: {', '.join(BASELINES)}."
            )
        if self.smoothgrad_base not in ("saliency", "ig"):
            raise ExplainError(
                f"SmoothGrad runs over 'saliency' or 'ig', not {self.smoothgrad_base!r}."
            )
        for name in ("ig_steps", "internal_batch_size", "smoothgrad_samples"):
            if getattr(self, name) < 1:
                raise ExplainError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not 0.0 <= self.smoothgrad_stdev <= 1.0:
            raise ExplainError(
                f"smoothgrad_stdev is a fraction of the input range (0 to 1), "
                f"got {self.smoothgrad_stdev}."
            )
        for name in ("occlusion_window", "occlusion_stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExplainError(f"{name} must be at least 1 pixel, got {value}.")


@dataclass(frozen=True)
class Explanation:
    """Maps at input resolution plus what produced them.

    ``maps`` [N, H, W] float32, finite; ``raw`` the method's native output (coarse CAM
    [N, 1, h, w] or per-channel attributions [N, C, H, W]); ``signed``: positive and negative
    values both carry meaning (render with a diverging colormap); ``probs``: softmax
    probability of ``target``; ``extra``: method-specific results (``convergence_delta`` for
    IG, ``layer_maps`` label -> [N, H, W] when several Grad-CAM layers were asked for,
    ``cam_layer``, ``window``/``stride`` for occlusion, and always ``predicted`` /
    ``predicted_prob``: the model's own class and its probability).
    """

    maps: np.ndarray
    raw: np.ndarray
    signed: bool
    method: str
    target: np.ndarray
    probs: np.ndarray
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0


class _Forward(nn.Module):
    """The model's logits, remembering the first batch of them (for probabilities).

    With ``argmax=True`` it returns only the arg-max logit ([N, 1], target 0), which lets a
    single-pass method explain the predicted class without a separate forward.
    It is an ``nn.Module`` because Guided Backprop walks the forward function's modules.
    """

    def __init__(self, model: nn.Module, argmax: bool) -> None:
        super().__init__()
        self.model = model
        self.argmax = argmax
        self.first_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.first_logits is None:
            self.first_logits = logits.detach()
        if self.argmax:
            return logits.gather(1, logits.argmax(dim=1, keepdim=True))
        return logits


@dataclass
class _Call:
    """One attribution request, resolved: inputs, target, forward function."""

    model: nn.Module
    entry: ModelEntry
    x: torch.Tensor
    target: torch.Tensor | None  # None: explain the arg-max inside the forward pass
    settings: ExplainSettings

    def __post_init__(self) -> None:
        self.forward = _Forward(self.model, argmax=self.target is None)

    @property
    def captum_target(self) -> torch.Tensor | int:
        return 0 if self.target is None else self.target


def _layer(model: nn.Module, entry: ModelEntry, label: str) -> nn.Module:
    if label not in entry.cam_layers:
        raise ExplainError(
            f"{entry.key}: no Grad-CAM layer {label!r}; choose one of: "
            f"{', '.join(entry.cam_layers)}."
        )
    path = entry.cam_layers[label]
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ExplainError(
            f"{entry.key}: the model has no submodule {path!r} (Grad-CAM layer {label!r})."
        ) from None


def _cam_labels(entry: ModelEntry, settings: ExplainSettings) -> list[str]:
    if not entry.cam_layers:
        raise ExplainError(f"{entry.key}: this model has no layer registered for Grad-CAM.")
    if settings.cam_layer == ALL_LAYERS:
        return list(entry.cam_layers)
    if settings.cam_layer is None:
        return [next(iter(entry.cam_layers))]
    return [settings.cam_layer]


def _upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if cam.dim() != 4:
        raise ExplainError(
            f"Grad-CAM needs a layer with a spatial output [N, C, H, W]; this one gives "
            f"shape {tuple(cam.shape)}."
        )
    return LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")[:, 0]


def _gradcam(call: _Call) -> tuple[torch.Tensor, torch.Tensor, dict]:
    size = tuple(call.x.shape[-2:])
    labels = _cam_labels(call.entry, call.settings)
    layer_maps, layer_raw = {}, {}
    for label in labels:
        cam = LayerGradCam(call.forward, _layer(call.model, call.entry, label)).attribute(
            call.x, target=call.captum_target, relu_attributions=True
        )
        layer_raw[label] = cam.detach()
        layer_maps[label] = _upsample(layer_raw[label], size)
    first = labels[0]
    extra: dict = {"cam_layer": first}
    if len(labels) > 1:
        extra["layer_maps"] = {k: _numpy(v) for k, v in layer_maps.items()}
        extra["layer_raw"] = {k: _numpy(v) for k, v in layer_raw.items()}
    return layer_maps[first], layer_raw[first], extra


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.nan_to_num(t.float().cpu().numpy(), nan=0.0, posinf=0.0, neginf=0.0)


def _guided_gradcam(call: _Call) -> tuple[torch.Tensor, torch.Tensor, dict]:
    labels = _cam_labels(call.entry, call.settings)
    label = labels[0]  # one layer: "all" falls back to the default layer
    attr = GuidedGradCam(call.forward, _layer(call.model, call.entry, label)).attribute(
        call.x, target=call.captum_target, interpolate_mode="bilinear"
    )
    attr = attr.detach()
    return attr.abs().amax(dim=1), attr, {"cam_layer": label}


def _saliency(call: _Call) -> tuple[torch.Tensor, torch.Tensor, dict]:
    attr = Saliency(call.forward).attribute(call.x, target=call.captum_target, abs=True).detach()
    return attr.amax(dim=1), attr, {}


def _ig_rows(call: _Call) -> int:
    """Rows per IG pass; Captum needs room for two steps of every image at least."""
    return max(call.settings.internal_batch_size, 2 * call.x.shape[0])


def _ig(call: _Call) -> tuple[torch.Tensor, torch.Tensor, dict]:
    s = call.settings
    baseline = make_baseline(call.x, s.ig_baseline, call.entry.preprocess)
    attr, delta = IntegratedGradients(call.forward).attribute(
        call.x,
        baselines=baseline,
        target=call.target,
        n_steps=s.ig_steps,
        internal_batch_size=_ig_rows(call),
        return_convergence_delta=True,
    )
    attr = attr.detach()
    extra = {
        "convergence_delta": delta.detach().cpu().numpy().astype(np.float32),
        "baseline": s.ig_baseline,
        "n_steps": s.ig_steps,
    }
    return attr.sum(dim=1), attr, extra


def _noise_stdev(call: _Call) -> float:
    """SmoothGrad's sigma is a fraction of the input range; a pixel range of 1 is 1/std."""
    std = call.entry.preprocess.std
    return call.settings.smoothgrad_stdev / float(np.mean(std))


def _smoothgrad(call: _Call) -> tuple[torch.Tensor, torch.Tensor, dict]:
    s = call.settings
    kwargs: dict = {}
    if s.smoothgrad_base == "ig":
        base = IntegratedGradients(call.forward)
        kwargs = {
            "baselines": make_baseline(call.x, s.ig_baseline, call.entry.preprocess),
            "n_steps": s.ig_steps,
            "internal_batch_size": _ig_rows(call),
        }
        batch = 1
    else:
        base = Saliency(call.forward)
        kwargs = {"abs": False}
        batch = max(1, s.internal_batch_size // call.x.shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        attr = NoiseTunnel(base).attribute(
            call.x,
            nt_type="smoothgrad",
            nt_samples=s.smoothgrad_samples,
            nt_samples_batch_size=batch,
            stdevs=_noise_stdev(call),
            target=call.target,
            **kwargs,
        )
    attr = attr.detach()
    extra = {"base": s.smoothgrad_base, "samples": s.smoothgrad_samples}
    if s.smoothgrad_base == "ig":
        return attr.sum(dim=1), attr, extra
    return attr.abs().amax(dim=1), attr, extra


def occlusion_geometry(size: int, settings: ExplainSettings) -> tuple[int, int]:
    """Window and stride in pixels: an eighth of the side, half-overlapping, by default."""
    window = settings.occlusion_window or max(2, size // 8)
    stride = settings.occlusion_stride or max(1, window // 2)
    if window > size:
        raise ExplainError(
            f"The occlusion window ({window} px) is larger than the input ({size} px)."
        )
    return window, stride


def _occlusion(call: _Call) -> tuple[torch.Tensor, torch.Tensor, dict]:
    s = call.settings
    c, h, w = call.x.shape[1:]
    window, stride = occlusion_geometry(min(h, w), s)
    baseline = make_baseline(call.x, s.ig_baseline, call.entry.preprocess)
    attr = Occlusion(call.forward).attribute(
        call.x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=baseline,
        target=call.target,
        perturbations_per_eval=max(1, s.internal_batch_size // call.x.shape[0]),
    )
    attr = attr.detach()
    extra = {"window": window, "stride": stride, "baseline": s.ig_baseline}
    return attr.mean(dim=1), attr, extra


_SINGLE_PASS: dict[str, Callable[[_Call], tuple[torch.Tensor, torch.Tensor, dict]]] = {
    "gradcam": _gradcam,
    "guided_gradcam": _guided_gradcam,
    "saliency": _saliency,
}
_MULTI_PASS: dict[str, Callable[[_Call], tuple[torch.Tensor, torch.Tensor, dict]]] = {
    "ig": _ig,
    "smoothgrad": _smoothgrad,
    "occlusion": _occlusion,
}


def _resolve_target(
    target: int | torch.Tensor | np.ndarray | None, n: int, num_classes: int | None
) -> torch.Tensor | None:
    if target is None:
        return None
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ExplainError(f"Got {t.numel()} target classes for {n} images.")
    if num_classes is not None and ((t < 0) | (t >= num_classes)).any():
        raise ExplainError(
            f"Target class {t.tolist()} is out of range: the model has {num_classes} classes."
        )
    return t


def _check_images(images: torch.Tensor, entry: ModelEntry) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ExplainError(
            "explain() takes a batch of preprocessed images shaped [N, C, H, W]; got "
            f"{getattr(images, 'shape', type(images).__name__)}."
        )
    if images.shape[0] == 0:
        raise ExplainError("explain() got an empty batch: there is no image to explain.")
    size = entry.preprocess.input_size
    if tuple(images.shape[-2:]) != (size, size):
        raise ExplainError(
            f"{entry.key} takes {size}x{size} inputs; the images are "
            f"{images.shape[-1]}x{images.shape[-2]}. Preprocess them with the entry's settings."
        )


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _num_classes(entry: ModelEntry) -> int | None:
    try:
        return len(entry.classes)
    except Exception:  # noqa: BLE001 - a hand-built entry for an unregistered task
        return None


def explain(
    model: nn.Module,
    entry: ModelEntry,
    images: torch.Tensor,
    target: int | torch.Tensor | np.ndarray | None = None,
    method: str = "gradcam",
    settings: ExplainSettings = ExplainSettings(),
) -> Explanation:
    """Attribution maps of ``target`` (None: the predicted class) for a preprocessed batch.

    Safe to call from several threads on one shared model; leaves no hook, flag or
    ``requires_grad`` change behind.
    """
    if method not in METHODS:
        raise ExplainError(
            f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}."
        )
    _check_images(images, entry)
    start = time.perf_counter()
    n = images.shape[0]
    num_classes = _num_classes(entry)
    t = _resolve_target(target, n, num_classes)
    with model_guard(model), torch.inference_mode(False), torch.enable_grad():
        device = _device(model)
        x = images.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
        if t is not None and num_classes is None:  # a hand-built entry: ask the model
            with torch.no_grad():
                _resolve_target(t, n, model(x[:1].detach()).shape[1])
        if t is not None:
            t = t.to(device)
        several_cams = method == "gradcam" and settings.cam_layer == ALL_LAYERS
        if method in _SINGLE_PASS and not (several_cams and t is None):
            call = _Call(model, entry, x, t, settings)
            maps, raw, extra = _SINGLE_PASS[method](call)
            logits = call.forward.first_logits
        else:  # fix the class once so that every pass explains the same one
            with torch.no_grad():
                logits = model(x.detach())
            if t is None:
                t = logits.argmax(dim=1)
            call = _Call(model, entry, x, t, settings)
            maps, raw, extra = {**_SINGLE_PASS, **_MULTI_PASS}[method](call)
    probs_all = torch.softmax(logits.float(), dim=1)
    chosen = probs_all.argmax(dim=1) if t is None else t
    probs = probs_all.gather(1, chosen.view(-1, 1))[:, 0]
    top = probs_all.max(dim=1)
    extra["predicted"] = top.indices.cpu().numpy().astype(np.int64)
    extra["predicted_prob"] = top.values.cpu().numpy().astype(np.float32)
    out = Explanation(
        maps=_numpy(maps),
        raw=_numpy(raw),
        signed=method in SIGNED_METHODS or (method == "smoothgrad" and settings.smoothgrad_base == "ig"),
        method=method,
        target=chosen.cpu().numpy().astype(np.int64),
        probs=probs.cpu().numpy().astype(np.float32),
        extra=extra,
        seconds=time.perf_counter() - start,
    )
    log.debug("%s %s on %d images: %.3f s", entry.key, method, n, out.seconds)
    return out
