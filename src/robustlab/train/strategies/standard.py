"""``standard``: plain supervised training, cross-entropy on the clean training images.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.train.strategy import StepContext
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> context = StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=3)
    >>> float(Standard().loss(model, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), context)) > 0
    True
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy


@STRATEGIES.register("standard", tags=("baseline",))
class Standard(Strategy):
    """Plain supervised training: cross-entropy on the clean training images."""

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Cross-entropy of the clean batch."""
        return cross_entropy(model, x, y, context)
