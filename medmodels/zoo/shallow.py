"""Shallow CNNs of the malaria study and the WBC study's proposed CNN.

Malaria (Fig. 2 of the paper is not in the text): each "layer" is a conv 3x3 (same padding)
+ ReLU + 2x2 max-pool block with 32, 64, 128 filters; then flatten, dense 64 + ReLU,
dropout 0.5 and the output layer, on 64x64 RGB crops (80x80 for the shipped 3-layer net, see
the catalog). The 1-layer net keeps the same
head, so its dense layer is the widest (32x32x32 inputs): that is the model the paper saw
collapse.

WBC (paper section III): conv 3x3/32 stride 1, conv 3x3/64 stride 2, conv 3x3/64 stride 1,
all "valid" padding, each followed by ReLU, 2x2 max-pool with stride 1 and dropout 0.2;
flatten, dense 64 + ReLU, output. The text promises two hidden dense layers but lists one
(64 units) and the output layer; we read the output layer as the second fully connected
layer, i.e. one hidden layer of 64.
"""
from __future__ import annotations

from torch import Tensor, nn

from medmodels.zoo.registry import register_arch


class ConvBlock(nn.Module):
    """conv -> ReLU -> max-pool (-> dropout); ``act`` is the Grad-CAM layer of the block."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, padding: int = 1,
                 pool_stride: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=padding)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2, stride=pool_stride)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.pool(self.act(self.conv(x))))


def _dense_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class ShallowCNN(nn.Module):
    """``depth`` conv blocks (32, 64, 128 filters) and a small dense head."""

    WIDTHS = (32, 64, 128)

    def __init__(self, depth: int, num_classes: int, in_size: int = 64, hidden: int = 64) -> None:
        super().__init__()
        if not 1 <= depth <= len(self.WIDTHS):
            raise ValueError(f"depth must be 1..3, got {depth}")
        widths = self.WIDTHS[:depth]
        blocks, cin = [], 3
        for w in widths:
            blocks.append(ConvBlock(cin, w))
            cin = w
        self.features = nn.Sequential(*blocks)
        side = in_size // (2**depth)
        self.classifier = _dense_head(cin * side * side, hidden, num_classes, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _shallow(depth: int):
    def factory(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
        if imagenet:
            raise NotImplementedError("the shallow CNNs have no ImageNet weights; they train from scratch")
        return ShallowCNN(depth, num_classes, in_size)

    return factory


for _d in (1, 2, 3):
    register_arch(f"shallow_cnn{_d}")(_shallow(_d))


class WBCNet(nn.Module):
    """The WBC study's proposed CNN (see module docstring for the reading of the text)."""

    def __init__(self, num_classes: int, in_size: int = 100) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBlock(3, 32, stride=1, padding=0, pool_stride=1, dropout=0.2),
            ConvBlock(32, 64, stride=2, padding=0, pool_stride=1, dropout=0.2),
            ConvBlock(64, 64, stride=1, padding=0, pool_stride=1, dropout=0.2),
        )
        side = in_size - 3                      # conv1 (-2), pool (-1)
        side = (side - 3) // 2 + 1 - 1          # conv2 stride 2, pool
        side = side - 3                         # conv3 (-2), pool (-1)
        self.classifier = _dense_head(64 * side * side, 64, num_classes, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_arch("wbc_cnn")
def wbc_cnn(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
    if imagenet:
        raise NotImplementedError("the WBC CNN has no ImageNet weights; it trains from scratch")
    return WBCNet(num_classes, in_size)
