"""Deep baselines and comparison models built from torchvision, with heads for our class counts.

Heads are replaced where torchvision's ImageNet head would dominate the model at our small
input sizes: VGG-16 and AlexNet get a global-average-pooled head (torchvision's VGG
classifier alone is 120M parameters, far over a committable file), the rest keep their own
head with the last layer resized to the task's classes.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models as tvm

from medmodels.zoo.registry import register_arch


def _pooled_head(in_features: int, num_classes: int, hidden: int = 256) -> nn.Sequential:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, num_classes),
    )


class FeaturesHead(nn.Module):
    """``features`` then ``classifier``: VGG-16 / AlexNet trunk with a pooled head."""

    def __init__(self, features: nn.Module, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = _pooled_head(in_features, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def _weights(enum_cls, imagenet: bool):
    return enum_cls.DEFAULT if imagenet else None


def _tv(name: str, build: Callable[[bool, int], nn.Module]) -> None:
    def factory(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
        return build(imagenet, num_classes)

    register_arch(name)(factory)


def _vgg16(imagenet: bool, n: int) -> nn.Module:
    return FeaturesHead(tvm.vgg16(weights=_weights(tvm.VGG16_Weights, imagenet)).features, 512, n)


def _alexnet(imagenet: bool, n: int) -> nn.Module:
    return FeaturesHead(tvm.alexnet(weights=_weights(tvm.AlexNet_Weights, imagenet)).features, 256, n)


def _resnet(builder, weights_enum):
    def build(imagenet: bool, n: int) -> nn.Module:
        m = builder(weights=_weights(weights_enum, imagenet))
        m.fc = nn.Linear(m.fc.in_features, n)
        return m

    return build


def _inception_v3(imagenet: bool, n: int) -> nn.Module:
    m = tvm.inception_v3(
        weights=_weights(tvm.Inception_V3_Weights, imagenet),
        aux_logits=imagenet, init_weights=not imagenet, transform_input=False,
    )
    m.aux_logits, m.AuxLogits = False, None
    m.fc = nn.Linear(m.fc.in_features, n)
    return m


def _last_linear(builder, weights_enum, attr: str = "classifier"):
    def build(imagenet: bool, n: int) -> nn.Module:
        m = builder(weights=_weights(weights_enum, imagenet))
        head = getattr(m, attr)
        head[-1] = nn.Linear(head[-1].in_features, n)
        return m

    return build


def _swin_t(imagenet: bool, n: int) -> nn.Module:
    m = tvm.swin_t(weights=_weights(tvm.Swin_T_Weights, imagenet))
    m.head = nn.Linear(m.head.in_features, n)
    return m


_tv("vgg16", _vgg16)
_tv("alexnet", _alexnet)
_tv("resnet50", _resnet(tvm.resnet50, tvm.ResNet50_Weights))
_tv("resnet18", _resnet(tvm.resnet18, tvm.ResNet18_Weights))
_tv("inception_v3", _inception_v3)
_tv("mobilenet_v3", _last_linear(tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights))
_tv("efficientnet_v2", _last_linear(tvm.efficientnet_v2_s, tvm.EfficientNet_V2_S_Weights))
_tv("convnext", _last_linear(tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights))
_tv("swin", _swin_t)
