"""The CNN of Lin & Lin (2022), Section 3 and Figure 2.

conv(16) -> max-pool -> conv(36) -> max-pool -> flatten (36 x 7 x 7 = 1764) -> fc 128 ->
dropout 0.2 -> fc 10. The paper gives the channel counts, the pooling (28 -> 14 -> 7), the
flatten size, the hidden width and the dropout; it does not give kernel sizes or activations.
We assume what its Figure 2 and the TensorFlow tutorial network it matches use: 5x5 kernels with
"same" padding, 2x2 max-pooling with stride 2 and ReLU after each pooled convolution and after
the hidden layer. Training follows the paper: Adam, learning rate 1e-4, batch 100.

Example:
    >>> import torch
    >>> net = Lin2022CNN()
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in net.parameters())
    242062
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS


@MODELS.register("lin2022_cnn", tags=("lin2022", "mnist"))
class Lin2022CNN(nn.Module):
    """Two-convolution CNN of lin2022 (16 and 36 5x5 filters, fc 128, dropout 0.2).

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: number of output logits.
        image_size: square input side; must be divisible by 4 (28 for MNIST).
        dropout: dropout probability before the last layer (0.2 in the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ModelError(f"lin2022_cnn needs an image size divisible by 4, got {image_size}")
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=5, padding=2),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(16, 36, kernel_size=5, padding=2),
            nn.MaxPool2d(2),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(36 * side * side, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.features(x))  # type: ignore[no-any-return]
