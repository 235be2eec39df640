"""VGG-16 sized for 32 x 32 inputs, for ghosh2018's comparison of receptive fields (and huang2021).

ghosh2018 (Section 2, Figure 1b-c) compares ImageNet's VGG-16 (Simonyan & Zisserman 2015,
configuration D) with AlexNet under JPEG and JPEG 2000 and explains AlexNet's robustness by its
larger receptive field at the output of the first max pooling (R) relative to JPEG's 8 x 8
block: VGG's two 3x3 convolutions and 2x2 pooling see 6 x 6 pixels, AlexNet's 11x11/4
convolution and pooling far more. huang2021 uses VGG-16 as a threat model.

This is configuration D unchanged in its 13 convolutions (3x3, padding 1; 64, 64 | 128, 128 |
256 x 3 | 512 x 3 | 512 x 3, a 2x2 max pool after each group) and its three fully connected
layers, so the receptive fields are VGG-16's; what we change for 32 x 32 images (assumptions,
neither paper trains at this size): the hidden FC layers have 512 units instead of 4,096 (after
five poolings a 32 x 32 image is a 1 x 1 x 512 map), dropout 0.5 stays; batch normalisation
after each convolution (``batch_norm``, default on) because VGG-16 without it trains from
scratch only with careful initialisation; input normalised by the CIFAR-10 channel statistics
(VGG subtracts the mean RGB value; ``mean`` / ``std`` change or remove it).

Example:
    >>> import torch
    >>> VGG16()(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS, input_normalization
from robustlab.models.stats import CIFAR10_MEAN, CIFAR10_STD

#: Output channels of VGG-16's convolutions; "M" is a 2x2 max pooling.
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


@MODELS.register("vgg16", tags=("ghosh2018", "huang2021", "32x32"))
class VGG16(nn.Module):
    """VGG-16 (13 conv + 3 FC) for 32 x 32 images: 15,253,578 parameters.

    The parameter count is for 3 x 32 x 32 inputs, 10 classes, batch normalisation on.

    Args:
        in_channels: image channels.
        num_classes: number of output logits.
        image_size: square input side, divisible by 32.
        hidden: units of the two hidden fully connected layers (4,096 in ImageNet's VGG-16).
        dropout: dropout probability after each hidden fully connected layer.
        batch_norm: batch normalisation after every convolution.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        hidden: int = 512,
        dropout: float = 0.5,
        batch_norm: bool = True,
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise ModelError(f"vgg16 needs an image size divisible by 32, got {image_size}")
        side = image_size // 32
        layers: list[nn.Module] = []
        cin = in_channels
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            cout = int(item)
            layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]
