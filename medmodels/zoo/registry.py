"""One registry maps (task, model name) to an architecture factory and its configuration.

Shaped after timm's registry: a decorator registers architecture factories, a table of
``ModelEntry`` records says which (task, name) pairs exist and how to preprocess for
them, and ``create_model`` is the single way to build one. Callers never guess the
input size, normalisation, class order or Grad-CAM layer: they read them from here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from torch import nn

from medmodels.errors import UnknownModelError, WeightsError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: its classes and the class whose probability is the score."""

    name: str
    title: str
    classes: tuple[str, ...]
    positive_class: str | None
    modality: str
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int | None:
        return None if self.positive_class is None else self.classes.index(self.positive_class)


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn an image into the tensor a model expects.

    ``resize="pad_square"`` pads to a square with black before resizing (keeps aspect ratio,
    removes the image-shape shortcut of the chest X-ray sources); ``per_image_norm`` rescales
    each image's intensities to its own 1st-99th percentile range before mean/std
    normalisation, removing brightness differences between X-ray sources.
    ``grayscale`` converts to luminance first and repeats it on 3 channels.
    """

    input_size: int
    mean: tuple[float, float, float] = HALF
    std: tuple[float, float, float] = HALF
    resize: Literal["squash", "pad_square"] = "squash"
    per_image_norm: bool = False
    grayscale: bool = False
    channels: int = 3


@dataclass(frozen=True)
class ModelEntry:
    """A registered (task, model): architecture, preprocessing, explanation layers, provenance."""

    task: str
    name: str
    arch: str
    title: str
    description: str
    paper: str
    preprocess: Preprocess
    cam_layers: Mapping[str, str]
    family: str
    kwargs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    notes: str = ""

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.task_spec.classes

    @property
    def default_cam_layer(self) -> str:
        return next(iter(self.cam_layers.values()))


ArchFactory = Callable[..., nn.Module]

_ARCHS: dict[str, ArchFactory] = {}
_TASKS: dict[str, TaskSpec] = {}
_ENTRIES: dict[tuple[str, str], ModelEntry] = {}


def register_arch(name: str) -> Callable[[ArchFactory], ArchFactory]:
    """Decorator: register an architecture factory ``f(num_classes, in_size, **kwargs)``."""

    def deco(fn: ArchFactory) -> ArchFactory:
        if name in _ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        _ARCHS[name] = fn
        return fn

    return deco


def register_task(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.name] = spec
    return spec


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.arch not in _ARCHS:
        raise ValueError(f"{entry.key}: unknown architecture {entry.arch!r}")
    if entry.task not in _TASKS:
        raise ValueError(f"{entry.key}: unknown task {entry.task!r}")
    _ENTRIES[(entry.task, entry.name)] = entry
    return entry


def list_tasks() -> list[TaskSpec]:
    return list(_TASKS.values())


def get_task(name: str) -> TaskSpec:
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown task {name!r}. Known tasks: {', '.join(sorted(_TASKS))}."
        ) from None


def list_models(task: str | None = None) -> list[ModelEntry]:
    """Every registered entry, in registration order (optionally for one task)."""
    if task is not None:
        get_task(task)
    return [e for e in _ENTRIES.values() if task is None or e.task == task]


def get_entry(task: str, name: str) -> ModelEntry:
    get_task(task)
    try:
        return _ENTRIES[(task, name)]
    except KeyError:
        names = ", ".join(e.name for e in list_models(task))
        raise UnknownModelError(
            f"Unknown model {name!r} for task {task!r}. Models for {task}: {names}."
        ) from None


def build_arch(entry: ModelEntry, imagenet: bool = False) -> nn.Module:
    """Instantiate the architecture of ``entry`` with random (or ImageNet backbone) weights."""
    factory = _ARCHS[entry.arch]
    return factory(
        num_classes=len(entry.classes),
        in_size=entry.preprocess.input_size,
        imagenet=imagenet,
        **dict(entry.kwargs),
    )


def create_model(
    task: str,
    name: str,
    pretrained: bool | str | Path = False,
) -> nn.Module:
    """Build a registered model.

    ``pretrained=False``: random initialisation (what every weight trained here starts from).
    ``pretrained=True``: ImageNet backbone weights through torchvision's weights API; this
    needs the internet or a filled torch cache and raises ``WeightsError`` when neither is
    there (it never hangs: downloads are refused up front when ``HF_HUB_OFFLINE`` or
    ``MEDMODELS_OFFLINE`` is set). A path: a checkpoint file with this model's state dict
    (safetensors, or a PyTorch file loaded with ``weights_only=True``).
    To load the weights trained by this project, use ``medmodels.hub.load_trained``.
    """
    entry = get_entry(task, name)
    if pretrained is False:
        return build_arch(entry)
    if pretrained is True:
        return _with_imagenet(entry)
    return _with_checkpoint(entry, Path(pretrained))


def _with_imagenet(entry: ModelEntry) -> nn.Module:
    import os

    if os.environ.get("MEDMODELS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE"):
        raise WeightsError(
            f"{entry.key}: ImageNet weights need a download and this process is offline "
            "(MEDMODELS_OFFLINE/HF_HUB_OFFLINE is set). Pass a checkpoint path instead."
        )
    try:
        return build_arch(entry, imagenet=True)
    except NotImplementedError as err:
        raise WeightsError(f"{entry.key}: {err}") from None
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        raise WeightsError(
            f"{entry.key}: could not fetch ImageNet weights through torchvision "
            f"({type(err).__name__}: {err}). Without internet access, pass a local "
            "checkpoint path as pretrained=..."
        ) from None


def _with_checkpoint(entry: ModelEntry, path: Path) -> nn.Module:
    import torch

    if not path.is_file():
        raise WeightsError(f"{entry.key}: checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a user error
            raise WeightsError(f"{entry.key}: cannot read checkpoint {path.name}: {err}") from None
    model = build_arch(entry)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise WeightsError(
            f"{entry.key}: checkpoint {path.name} does not fit this architecture "
            f"({str(err).splitlines()[-1].strip()})."
        ) from None
    if missing:
        raise WeightsError(
            f"{entry.key}: checkpoint {path.name} does not fit this architecture "
            f"({len(missing)} missing tensors, e.g. {missing[0]})."
        )
    if unexpected:
        log.warning("%s: ignored %d unexpected tensors in %s", entry.key, len(unexpected), path)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
