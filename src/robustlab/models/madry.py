"""The MNIST network of Madry et al. (2018), as released in their ``mnist_challenge`` code.

Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant to
Adversarial Attacks", Section 5 and Appendix: the MNIST classifier is the TensorFlow tutorial
network, "two convolutional layers (each followed by max-pooling) and a fully connected
layer". Their ``model.py`` gives the shapes: conv 5x5 with 32 filters ("same" padding), ReLU,
2x2 max pooling; conv 5x5 with 64 filters ("same"), ReLU, 2x2 max pooling; flatten (64 x 7 x 7
= 3,136); fc 1,024 with ReLU; fc 10. No dropout, no batch normalisation, and no input
normalisation: the network takes pixels in ``[0, 1]``, the space the ``eps = 0.3`` L-inf
threat model is stated in.

Initialisation: their code draws every weight from a normal distribution of standard
deviation 0.1 truncated at two standard deviations and sets every bias to 0.1
(``init="madry"``). The default, ``init="pytorch"``, keeps PyTorch's default
(Kaiming-uniform) layers like every other architecture here: in our short trainings (a few
epochs on the 19,690-digit MNIST prefix, Adam) it learned faster, clean and adversarially,
than Madry's initialisation, which their 100,000 steps could afford (see
``configs/papers/madry-pgd-mnist.yaml``).
Training in their ``config.json``: Adam, learning rate 1e-4, batch 50, 100,000 steps (83
epochs of the 60,000 training digits), every image replaced by its PGD-40 example (eps 0.3,
step 0.01, random start).

Example:
    >>> import torch
    >>> net = MadryMNIST()
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in net.parameters())
    3274634
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS

# Madry et al.'s tf.truncated_normal(stddev=0.1) and tf.constant(0.1) initialisers.
_WEIGHT_STD = 0.1
_BIAS = 0.1


@MODELS.register("madry_mnist", tags=("madry2018", "mnist", "28x28"))
class MadryMNIST(nn.Module):
    """Madry et al.'s (2018) MNIST network: 3,274,634 parameters.

    ``conv5x5(32) ReLU pool, conv5x5(64) ReLU pool, fc 1024 ReLU, fc 10`` ("same" padding,
    2x2 max pooling with stride 2). The parameter count is for 1 x 28 x 28 inputs and 10
    classes.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of output logits.
        image_size: square input side (28 for MNIST), divisible by 4.
        init: ``pytorch`` (PyTorch's default layer initialisation) or ``madry`` (weights from
            a normal of std 0.1 truncated at 2 std, biases 0.1, as their code).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        init: Literal["madry", "pytorch"] = "pytorch",
    ) -> None:
        super().__init__()
        if image_size < 4 or image_size % 4:
            raise ModelError(f"madry_mnist needs an image size divisible by 4, got {image_size}")
        if init not in ("madry", "pytorch"):
            raise ModelError(
                f"init must be 'madry' (their truncated normal, std 0.1, biases 0.1) or "
                f"'pytorch' (PyTorch's default), got {init!r}"
            )
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 1024),
            nn.ReLU(),
            nn.Linear(1024, num_classes),
        )
        if init == "madry":
            for layer in self.modules():
                if isinstance(layer, nn.Conv2d | nn.Linear):
                    nn.init.trunc_normal_(
                        layer.weight, std=_WEIGHT_STD, a=-2 * _WEIGHT_STD, b=2 * _WEIGHT_STD
                    )
                    if layer.bias is not None:
                        nn.init.constant_(layer.bias, _BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(x))  # type: ignore[no-any-return]
