"""An AlexNet-style network for 32 x 32 inputs, for ghosh2018's comparison of receptive fields.

ghosh2018 (Section 2, Figure 1b-c) finds ImageNet's AlexNet (Krizhevsky et al. 2012) more
robust to strong JPEG compression than VGG-16 and explains it by AlexNet's larger receptive
field at the output of the first max pooling, which spans several of JPEG's 8 x 8 blocks,
while VGG-16's (6 x 6 pixels) lies inside one.

AlexNet's structure is kept: five convolutions (64, 192, 384, 256, 256 filters, the widths of
the single-GPU variant), the first an 11x11 kernel with stride 4, max pooling after the first,
second and fifth, and three fully connected layers with dropout 0.5. For 32 x 32 images
(assumptions, neither paper trains at this size): the first convolution is padded by 5 and
the poolings are 2x2 with stride 2 (AlexNet's overlapping 3x3/2 pooling would shrink a 32 x 32
image to nothing), as in the common CIFAR ports of AlexNet; the hidden FC layers have 512 units
instead of 4,096; no local response normalisation; input normalised by the CIFAR-10 channel
statistics (``mean`` / ``std`` change or remove it). The receptive field at the output of the
first pooling is 15 x 15 pixels, against 6 x 6 for :class:`robustlab.models.vgg.VGG16`: on
either side of JPEG's 8 x 8 block, as in ghosh2018's argument.

Example:
    >>> import torch
    >>> AlexNet()(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS, input_normalization
from robustlab.models.stats import CIFAR10_MEAN, CIFAR10_STD


@MODELS.register("alexnet", tags=("ghosh2018", "32x32"))
class AlexNet(nn.Module):
    """AlexNet-style network (5 conv + 3 FC, 11x11/4 first kernel) for 32 x 32: 2,869,066 params.

    The parameter count is for 3 x 32 x 32 inputs and 10 classes.

    Args:
        in_channels: image channels.
        num_classes: number of output logits.
        image_size: square input side, divisible by 32.
        hidden: units of the two hidden fully connected layers (4,096 in ImageNet's AlexNet).
        dropout: dropout probability before each hidden fully connected layer.
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
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise ModelError(f"alexnet needs an image size divisible by 32, got {image_size}")
        side = image_size // 32
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(256 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]
