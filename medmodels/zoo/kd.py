"""The knowledge-distillation study: ResNet50V2, the VGG19+ResNet50V2 teacher, the MobileNetV2 student.

Teacher reading of the paper. The text says both backbones give 10x10x2048 feature maps,
but VGG19's last convolution has 512 channels; and 10x10 maps would need a 320 px input,
which with the described head gives ~56M parameters, not the paper's 49.2M. Taking the
layers as described at the 224 px input the paper uses (VGG19 conv features 7x7x512,
ResNet50V2 7x7x2048, concatenated to 7x7x2560, 1x1 conv with 1024 filters and no
activation, flatten, dense 64 + ReLU, dropout 0.5, dense to the classes) gives 49.4M
parameters, the paper's 49.2M within 0.5%; so we read it that way.

Student: MobileNetV2 features with the teacher's head shape (global average pool, dense 64 +
ReLU, dropout 0.5, dense): 2.31M parameters, the paper's 2.33M within 1%.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from medmodels.zoo.registry import register_arch


class PreActBottleneck(nn.Module):
    """ResNet v2 bottleneck: BN-ReLU before each convolution; the shortcut taps the pre-activation."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.preact = nn.Sequential(nn.BatchNorm2d(cin, eps=1.001e-5), nn.ReLU())
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else None
        )
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1.001e-5)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=1.001e-5)
        self.conv3 = nn.Conv2d(width, cout, 1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        pre = self.preact(x)
        short = x if self.shortcut is None else self.shortcut(pre)
        out = self.relu(self.bn1(self.conv1(pre)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.conv3(out) + short


class ResNet50V2Features(nn.Module):
    """Pre-activation ResNet-50 (He et al. 2016, "Identity mappings"), without the top.

    torchvision has only v1. Output: [N, 2048, H/32, W/32] after the final BN-ReLU.
    """

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, padding=1)
        )
        stages, cin = [], 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(PreActBottleneck(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * PreActBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.post = nn.Sequential(nn.BatchNorm2d(cin, eps=1.001e-5), nn.ReLU())
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.stages(self.stem(x)))


def _head(in_features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, num_classes))


class KDTeacher(nn.Module):
    """VGG19 + ResNet50V2 features concatenated, 1x1 conv 1024 (linear), flatten, dense head."""

    def __init__(self, num_classes: int, in_size: int = 224, imagenet: bool = False) -> None:
        super().__init__()
        if in_size % 32:
            raise ValueError("the teacher's two backbones agree on the map size only when in_size % 32 == 0")
        if imagenet:
            raise NotImplementedError(
                "torchvision has no ImageNet weights for ResNet50V2; pass a checkpoint path"
            )
        self.vgg = tvm.vgg19(weights=None).features
        self.resnet = ResNet50V2Features()
        self.fuse = nn.Conv2d(512 + self.resnet.out_channels, 1024, 1)
        side = in_size // 32
        self.classifier = nn.Sequential(nn.Flatten(), _head(1024 * side * side, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fuse(torch.cat([self.vgg(x), self.resnet(x)], dim=1))
        return self.classifier(fused)


@register_arch("kd_teacher")
def kd_teacher(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
    return KDTeacher(num_classes, in_size, imagenet)


class MobileNetV2Student(nn.Module):
    def __init__(self, num_classes: int, imagenet: bool = False) -> None:
        super().__init__()
        weights = tvm.MobileNet_V2_Weights.IMAGENET1K_V1 if imagenet else None
        self.features = tvm.mobilenet_v2(weights=weights).features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _head(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_arch("mobilenet_v2")
def mobilenet_v2(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
    return MobileNetV2Student(num_classes, imagenet)
