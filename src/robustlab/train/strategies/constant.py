"""``constant``: cavey's constant learning (Section VI-A), every training image perturbed.

cavey: "Constant learning is a simple method of training that involves only presenting
perturbed images to a model [...] every sample has some form of mutation applied to it."
Each image of every batch is degraded by ``perturbation`` at a level drawn from its levels
(a list or a range, per image by default or once per batch with ``draw: per_batch``); the loss
is the cross-entropy of the perturbed batch. No clean image is ever shown to the network.

cavey trains one model per training level or level range (noise: five models at variances
linearly spaced in 0.001..0.05; blur: sigma 0.04..1.0; pixels: 1 to 10 defective pixels).

Assumption where the paper is silent or differs: cavey writes "Data remains unaltered once
training begins", i.e. the training set is perturbed once before training and the same
perturbed copy is shown in every epoch. Here the perturbation is drawn afresh for every batch
from the strategy's generator (seeded by recipe seed and epoch, so training stays
reproducible and resumable); a strategy does not see which training image a batch row is, so
a fixed per-image perturbation cannot be expressed. The network therefore sees more distinct
perturbations of each image than cavey's, never fewer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.train.strategy import StepContext
    >>> strategy = Constant({"degradation": "gaussian_noise_variance", "levels": [0.05]})
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> context = StepContext(0, 1, torch.Generator().manual_seed(0), num_classes=3)
    >>> loss = strategy.loss(model, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), context)
    >>> loss.ndim, context.images
    (0, 2)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.train.perturbation import Perturbation, perturbation_from
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy


def required_perturbation(strategy: str, params: dict[str, Any] | None) -> Perturbation:
    """The :class:`Perturbation` of a strategy whose ``perturbation`` parameter is required."""
    perturbation = perturbation_from(params)
    if perturbation is None:
        raise InvalidParameterError(
            f"{strategy}: perturbation is required, got None; give e.g. "
            "{degradation: gaussian_noise_variance, levels: {low: 0.001, high: 0.05}}"
        )
    return perturbation


@STRATEGIES.register("constant", tags=("cavey", "perturbed"))
class Constant(Strategy):
    """cavey's constant learning: cross-entropy on batches whose every image is perturbed.

    Args:
        perturbation: ``{degradation, levels, parameter, params, draw}`` every training image
            is degraded with (see :class:`~robustlab.train.perturbation.Perturbation`).

    Raises:
        InvalidParameterError: if ``perturbation`` is missing or invalid.
    """

    def __init__(self, perturbation: dict[str, Any]) -> None:
        self.perturbation = required_perturbation("constant", perturbation)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Cross-entropy of the batch with every image perturbed."""
        perturbed = self.perturbation.apply(x, context.generator)
        return cross_entropy(model, perturbed, y, context)
