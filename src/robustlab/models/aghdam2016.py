"""The ConvNets of Aghdam, Heravi & Puig (2016), Figures 1 (CIFAR-10, MNIST) and 2 (GTSRB).

The figures are images that the paper's text does not reproduce; what survives is the caption
notation (``C(c, k, w)``: k filters of size w x w on c channels; ``P(m, n)``: max pooling with
an m x m kernel and stride n; ``FC(x)``), the remark that for CIFAR-10 "the feature maps are
padded with border size 2 before applying the convolution filters", the GTSRB input size
(48 x 48) and that the GTSRB network "is taken from (Aghdam et al., 2015)". Clean accuracies:
CIFAR-10 78.95 %, MNIST 98.98 % (Table 1). Training settings are not given.

What we assume where the text is silent:

* CIFAR-10 and MNIST: the authors' toolkit's reference networks, which fit every surviving
  detail: for CIFAR-10 Caffe's ``cifar10_quick`` (three 5x5 convolutions with padding 2 and
  32, 32, 64 filters, each followed by 3x3 pooling with stride 2, the overlapping pooling that
  explains why the caption's ``P(m, n)`` names kernel and stride separately; FC 64; FC 10;
  about 75-79 % clean, bracketing the paper's 78.95 %), for MNIST Caffe's LeNet (two
  unpadded 5x5 convolutions with 20 and 50 filters, each followed by 2x2 pooling, FC 500,
  FC 10; about 99 %). The caption denotes only max pooling, so all pooling is max pooling
  (``cifar10_quick`` averages in its last two pools); pooling rounds up, as Caffe's does.
  ReLU follows every hidden convolution and FC layer of the CIFAR-10 net; the MNIST net has
  LeNet's single ReLU after FC 500.
* GTSRB: Aghdam et al. (2015) modify the single-column network of Ciresan et al. (2012)
  (48x48 input, 7x7/100, 4x4/150 and 4x4/250 convolutions, each followed by 2x2 max pooling,
  FC 300, FC 43) and replace its activation by Leaky ReLU; they report 27 % fewer parameters
  than that network without (in the text available to us) saying which layers shrank. We keep
  Ciresan's widths with Leaky ReLU (slope 0.01), so our net has Ciresan's 1,543,443 parameters.
* Input normalisation: the CIFAR-10 and GTSRB nets subtract the channel mean and divide by the
  channel std (Caffe's examples subtract a mean; dividing by the std only rescales the first
  layer); the MNIST net takes ``[0, 1]`` pixels as LeNet does. ``mean`` / ``std`` change or
  (both None) remove the normalisation.

Example:
    >>> import torch
    >>> net = Aghdam2016CIFAR10()
    >>> net(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> Aghdam2016GTSRB()(torch.rand(2, 3, 48, 48)).shape
    torch.Size([2, 43])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS, input_normalization
from robustlab.models.stats import CIFAR10_MEAN, CIFAR10_STD, GTSRB_MEAN, GTSRB_STD


def _pooled(side: int, kernel: int, stride: int) -> int:
    """Side after max pooling that rounds up (Caffe's convention, ``ceil_mode=True``)."""
    out = -(-(side - kernel) // stride) + 1
    # PyTorch, like Caffe, drops a last window that would start in the padding-free overhang.
    if (out - 1) * stride >= side:
        out -= 1
    return out


def _check_side(name: str, side: int, minimum: int) -> None:
    if side < minimum:
        raise ModelError(f"{name} needs images of at least {minimum}x{minimum} pixels, got {side}")


@MODELS.register("aghdam2016_cifar10", tags=("aghdam2016", "cifar10", "32x32"))
class Aghdam2016CIFAR10(nn.Module):
    """aghdam2016's CIFAR-10 ConvNet (Figure 1, assumed Caffe cifar10_quick): 145,578 params.

    ``C(3,32,5) P(3,2) C(32,32,5) P(3,2) C(32,64,5) P(3,2) FC(64) FC(10)``, padding 2, ReLU.
    The parameter count is for 3 x 32 x 32 inputs and 10 classes.

    Args:
        in_channels: image channels (3 for CIFAR-10).
        num_classes: number of output logits.
        image_size: square input side (32 for CIFAR-10), at least 8.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
    ) -> None:
        super().__init__()
        _check_side("aghdam2016_cifar10", image_size, 8)
        side = image_size
        for _ in range(3):
            side = _pooled(side, 3, 2)
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(32, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]


@MODELS.register("aghdam2016_mnist", tags=("aghdam2016", "mnist", "28x28"))
class Aghdam2016MNIST(nn.Module):
    """aghdam2016's MNIST ConvNet (Figure 1, assumed Caffe LeNet): 431,080 parameters.

    ``C(1,20,5) P(2,2) C(20,50,5) P(2,2) FC(500) ReLU FC(10)``, no padding, ``[0, 1]`` input.
    The parameter count is for 1 x 28 x 28 inputs and 10 classes.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of output logits.
        image_size: square input side (28 for MNIST), at least 16.
        mean: per-channel means of an input normalisation (LeNet has none).
        std: per-channel standard deviations of an input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_side("aghdam2016_mnist", image_size, 16)
        side = _pooled(_pooled(image_size - 4, 2, 2) - 4, 2, 2)
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * side * side, 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]


@MODELS.register("aghdam2016_gtsrb", tags=("aghdam2016", "gtsrb", "48x48"))
class Aghdam2016GTSRB(nn.Module):
    """aghdam2016's GTSRB ConvNet (Figure 2; assumed Ciresan layout): 1,543,443 parameters.

    ``C(3,100,7) P(2,2) C(100,150,4) P(2,2) C(150,250,4) P(2,2) FC(300) FC(43)`` with Leaky
    ReLU after every hidden layer. The parameter count is for 3 x 48 x 48 inputs, 43 classes.

    Args:
        in_channels: image channels (3 for GTSRB).
        num_classes: number of output logits (43 traffic-sign classes).
        image_size: square input side (48 in the paper), at least 32.
        negative_slope: slope of the Leaky ReLU for negative inputs.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 43,
        image_size: int = 48,
        negative_slope: float = 0.01,
        mean: Sequence[float] | None = GTSRB_MEAN,
        std: Sequence[float] | None = GTSRB_STD,
    ) -> None:
        super().__init__()
        _check_side("aghdam2016_gtsrb", image_size, 32)
        side = image_size
        for kernel in (7, 4, 4):
            side = (side - kernel + 1) // 2
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 100, kernel_size=7),
            nn.LeakyReLU(negative_slope),
            nn.MaxPool2d(2),
            nn.Conv2d(100, 150, kernel_size=4),
            nn.LeakyReLU(negative_slope),
            nn.MaxPool2d(2),
            nn.Conv2d(150, 250, kernel_size=4),
            nn.LeakyReLU(negative_slope),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(250 * side * side, 300),
            nn.LeakyReLU(negative_slope),
            nn.Linear(300, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]
