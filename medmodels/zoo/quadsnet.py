"""QuadSNet: four parallel streams of four blocks each, fused and average-pooled.

Streams CS1/CS2 use conventional 3x3/5x5 convolutions, SS1/SS2 depthwise-separable 3x3/5x5.
Every block: conv -> batch norm (Keras momentum 0.99 = PyTorch 0.01, eps 1e-4) -> ReLU ->
2x2 max-pool -> dropout 0.3. The paper's Fig. 1 filter counts are not in the text; widths
(59, 118, 236, 472) per stream give 5,298,186 parameters for two classes, the paper's
5,235,944 within 1.2% (the parameter count does not depend on the input size).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodels.zoo.registry import register_arch

WIDTHS = (59, 118, 236, 472)


class SeparableConv2d(nn.Sequential):
    """Keras SeparableConv2D: depthwise k x k, then pointwise 1x1 (bias on the pointwise)."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1),
        )


class QuadBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, separable: bool) -> None:
        super().__init__()
        self.conv = SeparableConv2d(cin, cout, k) if separable else nn.Conv2d(cin, cout, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-4, momentum=0.01)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.pool(self.act(self.bn(self.conv(x)))))


def _stream(k: int, separable: bool, widths: tuple[int, ...]) -> nn.Sequential:
    blocks, cin = [], 3
    for w in widths:
        blocks.append(QuadBlock(cin, w, k, separable))
        cin = w
    return nn.Sequential(*blocks)


class QuadSNet(nn.Module):
    STREAMS = {"cs1": (3, False), "cs2": (5, False), "ss1": (3, True), "ss2": (5, True)}

    def __init__(self, num_classes: int, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.streams = nn.ModuleDict({n: _stream(k, sep, widths) for n, (k, sep) in self.STREAMS.items()})
        self.fusion = nn.Identity()  # the fused feature map; the Grad-CAM layer
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.3)
        self.classifier = nn.Linear(4 * widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fusion(torch.cat([s(x) for s in self.streams.values()], dim=1))
        return self.classifier(self.drop(self.pool(fused).flatten(1)))


@register_arch("quadsnet")
def quadsnet(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
    if imagenet:
        raise NotImplementedError("QuadSNet is trained from scratch by design (no pre-training)")
    if in_size < 16:
        raise ValueError("QuadSNet halves the input four times: in_size must be at least 16")
    return QuadSNet(num_classes)
