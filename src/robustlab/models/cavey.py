"""The MNIST and CIFAR-10 networks of Cavey, Dolan & Stock, Section IV and Figures 1-2.

The paper states the building blocks (Section IV): convolutions with "same" padding, each
followed by batch normalisation (eps 1e-5, gamma 1 and beta 0 at start) and ReLU; max pooling
with stride 2; "Dropout layers follow each max pooling with a probability p = 0.20"; a
flattened ``u_l z_l^2`` vector; optional fully connected layers with ReLU; a linear output
layer. Inputs are standardised ("normalized with mu = 0 and sigma^2 = 1"). Training: Adam
with beta1 = 0.5, beta2 = 0.999; MNIST lr 0.05, 50 epochs, batch 1,500 (97.42 %); CIFAR-10
lr 0.0005, 20 epochs, batch 100 (86.92 %). Table I ablates batch normalisation, dropout and
ReLU vs tanh on CIFAR-10; ``batch_norm``, ``dropout`` and ``activation`` reproduce its rows.

The layer counts, widths and kernel sizes are drawn in Figures 1 and 2, which the text does
not reproduce. We assume 3x3 kernels and, as the text says MNIST "requires a far less
complicated structure": for MNIST two blocks (32 and 64 filters) and the linear output layer;
for CIFAR-10 three double-convolution blocks (32, 64, 128 filters, the usual small VGG-style
network of this accuracy) and one hidden FC layer of 128. Normalisation uses the datasets'
channel statistics (:mod:`robustlab.models.stats`). Our training loop uses PyTorch's Adam
betas (0.9, 0.999), not the paper's beta1 = 0.5.

Example:
    >>> import torch
    >>> CaveyMNIST()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> CaveyCIFAR10(activation="tanh", batch_norm=False)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS, input_normalization
from robustlab.models.stats import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    raise ModelError(f"activation must be 'relu' or 'tanh' (cavey Table I), got '{name}'")


def _conv(cin: int, cout: int, batch_norm: bool, activation: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout, eps=1e-5))
    layers.append(_activation(activation))
    return layers


def _pool(dropout: float) -> list[nn.Module]:
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}")
    return [nn.MaxPool2d(2), nn.Dropout(dropout)]


def _check_side(name: str, side: int, pools: int) -> None:
    if side < 2**pools or side % 2**pools:
        raise ModelError(f"{name} needs an image size divisible by {2**pools}, got {side}")


@MODELS.register("cavey_mnist", tags=("cavey", "mnist", "28x28"))
class CaveyMNIST(nn.Module):
    """cavey's MNIST network (Figure 1; widths assumed): 50,378 parameters.

    ``[conv3x3(32) BN ReLU, pool, dropout] [conv3x3(64) BN ReLU, pool, dropout] linear``.
    The parameter count is for 1 x 28 x 28 inputs and 10 classes.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of output logits.
        image_size: square input side (28 for MNIST), divisible by 4.
        batch_norm: batch normalisation after every convolution.
        dropout: dropout probability after every pooling (0.2 in the paper).
        activation: ``relu`` or ``tanh``.
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        batch_norm: bool = True,
        dropout: float = 0.2,
        activation: Literal["relu", "tanh"] = "relu",
        mean: Sequence[float] | None = MNIST_MEAN,
        std: Sequence[float] | None = MNIST_STD,
    ) -> None:
        super().__init__()
        _check_side("cavey_mnist", image_size, 2)
        side = image_size // 4
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(
            *_conv(in_channels, 32, batch_norm, activation),
            *_pool(dropout),
            *_conv(32, 64, batch_norm, activation),
            *_pool(dropout),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]


@MODELS.register("cavey_cifar10", tags=("cavey", "cifar10", "32x32"))
class CaveyCIFAR10(nn.Module):
    """cavey's CIFAR-10 network (Figure 2; widths assumed): 551,466 parameters.

    Three blocks ``[conv3x3 BN ReLU, conv3x3 BN ReLU, pool, dropout]`` of 32, 64 and 128
    filters, then FC 128 with ReLU and the linear output layer. The parameter count is for
    3 x 32 x 32 inputs and 10 classes with batch normalisation.

    Args:
        in_channels: image channels (3 for CIFAR-10).
        num_classes: number of output logits.
        image_size: square input side (32 for CIFAR-10), divisible by 8.
        batch_norm: batch normalisation after every convolution (Table I's first column).
        dropout: dropout probability after every pooling (0.2; 0 for Table I's "False").
        activation: ``relu`` or ``tanh`` (Table I's third column).
        mean: per-channel means of the input normalisation (None with ``std`` for none).
        std: per-channel standard deviations of the input normalisation.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        batch_norm: bool = True,
        dropout: float = 0.2,
        activation: Literal["relu", "tanh"] = "relu",
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
    ) -> None:
        super().__init__()
        _check_side("cavey_cifar10", image_size, 3)
        side = image_size // 8
        layers: list[nn.Module] = []
        cin = in_channels
        for width in (32, 64, 128):
            layers += _conv(cin, width, batch_norm, activation)
            layers += _conv(width, width, batch_norm, activation)
            layers += _pool(dropout)
            cin = width
        self.normalize = input_normalization(in_channels, mean, std)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, 128),
            _activation(activation),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(self.normalize(x)))  # type: ignore[no-any-return]
