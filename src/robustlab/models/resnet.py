"""ResNet-18 and ResNet-50 for 32 x 32 inputs, huang2021's threat models.

huang2021 (Section 3.2, "Threat model") attacks ResNet-50 (and VGG-16) on CIFAR-10 and SVHN
without describing the variant. We use the standard CIFAR adaptation of He et al. (2016)'s
ImageNet networks: the same stages (64, 128, 256, 512 base widths; 2-2-2-2 basic blocks for
ResNet-18, 3-4-6-3 bottleneck blocks with expansion 4 for ResNet-50; stride 2 at the start of
stages 2-4; batch normalisation; projection shortcuts, 1x1 convolution + batch normalisation,
where shape changes) but a 3x3 stride-1 stem convolution and no max pooling, so a 32 x 32 image
reaches the last stage as 4 x 4, then global average pooling and one linear layer. Bottlenecks
stride in their 3x3 convolution ("ResNet v1.5"). Input normalisation: the CIFAR-10 channel
statistics (an assumption; huang2021 does not say; ``mean`` / ``std`` change or remove it).

Example:
    >>> import torch
    >>> resnet18()(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.models.base import MODELS, input_normalization
from robustlab.models.stats import CIFAR10_MEAN, CIFAR10_STD


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch normalisation and a residual connection."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _shortcut(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck residual function plus the shortcut, then ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem, four stages, global average pooling, linear layer.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        depths: blocks per stage.
        in_channels: image channels.
        num_classes: number of output logits.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: Sequence[int],
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.normalize = input_normalization(in_channels, mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        cin = 64
        for index, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            blocks: list[nn.Module] = []
            for b in range(depth):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(block(cin, width, stride))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        features = self.pool(self.stages(self.stem(self.normalize(x))))
        return self.fc(features.flatten(1))  # type: ignore[no-any-return]


@MODELS.register("resnet18", tags=("huang2021", "32x32"))
def resnet18(
    in_channels: int = 3,
    num_classes: int = 10,
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
) -> ResNet:
    """ResNet-18 for 32 x 32 images (3x3 stem, no max pool): 11,173,962 parameters.

    The parameter count is for 3 input channels and 10 classes; the count does not depend on
    the image size (global average pooling).

    Args:
        in_channels: image channels.
        num_classes: number of output logits.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, mean, std)


@MODELS.register("resnet50", tags=("huang2021", "32x32"))
def resnet50(
    in_channels: int = 3,
    num_classes: int = 10,
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
) -> ResNet:
    """ResNet-50 for 32 x 32 images (3x3 stem, no max pool): 23,520,842 parameters.

    The parameter count is for 3 input channels and 10 classes; the count does not depend on
    the image size (global average pooling).

    Args:
        in_channels: image channels.
        num_classes: number of output logits.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, mean, std)
