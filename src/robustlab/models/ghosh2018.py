"""A small VGG-style network with fc6, fc7 and fc8, our 28 x 28 stand-in for ghosh2018's VGG-16.

ghosh2018 (Section 5.2, Table 1) fine-tune the last one, two or three fully connected layers of
an ImageNet VGG-16 ("DA, fc8", "fc67", "fc678"). robustlab's ``vgg16`` needs an image side
divisible by 32 and the 28 x 28 networks (``lin2022_cnn``, ``aghdam2016_mnist``) have only two
``nn.Linear`` layers, so on MNIST / Fashion-MNIST the three fine-tuning depths need another
network. This one is *our* stand-in, not a network of the paper: it keeps what the comparison
depends on and shrinks the rest.

- VGG's convolution blocks: 3x3 convolutions with padding 1 and ReLU, two per block, a 2x2 max
  pooling after each block; two blocks (16, 16 | 32, 32 filters) take 28 x 28 to 7 x 7. As in
  VGG-16 the output of the first pooling sees 6 x 6 pixels, less than a JPEG 8 x 8 block (the
  receptive-field argument of ghosh2018 Section 2, Figure 1c).
- VGG's classifier: three fully connected layers named ``fc6``, ``fc7`` and ``fc8`` (ReLU and
  dropout 0.5 after fc6 and fc7), 256 hidden units instead of 4,096.
- No batch normalisation (VGG-16 has none); ``[0, 1]`` pixels in, no input normalisation
  unless ``mean`` and ``std`` are given.

Example:
    >>> import torch
    >>> net = Ghosh2018MNIST()
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [name for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    ['fc6', 'fc7', 'fc8']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS, input_normalization


def _check_side(name: str, image_size: int) -> None:
    """Two 2x2 poolings: the side must be divisible by 4."""
    if image_size < 4 or image_size % 4:
        raise ModelError(f"{name} needs an image size divisible by 4, got {image_size}")


@MODELS.register("ghosh2018_mnist", tags=("ghosh2018", "mnist", "28x28"))
class Ghosh2018MNIST(nn.Module):
    """Four 3x3 convolutions, two poolings, fc6 / fc7 / fc8: 486,394 parameters.

    The parameter count is for 1 x 28 x 28 inputs, 10 classes and 256 hidden units.

    Args:
        in_channels: image channels.
        num_classes: number of output logits.
        image_size: square input side, divisible by 4 (28 for MNIST).
        hidden: units of fc6 and fc7 (4,096 in ImageNet's VGG-16).
        dropout: dropout probability after fc6 and after fc7 (VGG-16: 0.5).
        mean: per-channel means of an input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        hidden: int = 256,
        dropout: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_side("ghosh2018_mnist", image_size)
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"ghosh2018_mnist: dropout must be in [0, 1), got {dropout}")
        side = image_size // 4
        self.normalize = input_normalization(in_channels, mean, std)
        layers: list[nn.Module] = []
        cin = in_channels
        for width in (16, 32):
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.fc6 = nn.Linear(32 * side * side, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.fc8 = nn.Linear(hidden, num_classes)
        self.relu = nn.ReLU()
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        h = self.features(self.normalize(x))
        h = self.drop6(self.relu(self.fc6(h)))
        h = self.drop7(self.relu(self.fc7(h)))
        return self.fc8(h)  # type: ignore[no-any-return]


@MODELS.register("ghosh2018_quality", tags=("ghosh2018", "quality", "28x28"))
class Ghosh2018Quality(nn.Module):
    """ghosh2018's master: a quality-prediction CNN, three convolutions and three FC layers.

    Section 4.1: "a small CNN to predict the quality of the input image ... three
    convolutional layers followed by three fully connected layers. The number of nodes in the
    final fully connected layer corresponds to the number of quality bins". The paper gives no
    widths; ours are 16, 32, 32 filters (3x3, padding 1, ReLU, a 2x2 max pooling after the
    first two) and 128, 64, ``num_classes`` units. The ``quality`` strategy sets the last layer
    to its number of bins, so ``num_classes`` need not be given.

    Args:
        in_channels: image channels.
        num_classes: number of bins (the last layer's units).
        image_size: square input side, divisible by 4.
        mean: per-channel means of an input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.

    Example:
        >>> import torch
        >>> Ghosh2018Quality(num_classes=3)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        image_size: int = 28,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_side("ghosh2018_quality", image_size)
        side = image_size // 4
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(32 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bin logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]
