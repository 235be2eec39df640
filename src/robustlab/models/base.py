"""The model registry and pieces shared by architectures.

A model maps pixel-space images ``(N, C, H, W)`` in ``[0, 1]`` to logits ``(N, classes)``;
normalisation, when an architecture wants it, is its first layer (:class:`Normalize`).

Example:
    >>> import torch
    >>> from robustlab.models import create_model
    >>> net = create_model("lin2022_cnn", in_channels=1, num_classes=10, image_size=28)
    >>> net(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustlab.errors import InvalidParameterError, ModelError
from robustlab.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


# Sizes shared by the architectures, each a whole number of at least 1, with an example.
_SIZES = {
    "in_channels": "1 for grey images, 3 for RGB",
    "num_classes": "10 for MNIST or CIFAR-10",
    "image_size": "28 for MNIST, 32 for CIFAR-10",
}


def create_model(name: str, **params: Any) -> nn.Module:
    """Build the registered architecture ``name``; unknown names list the valid ones.

    Raises:
        UnknownNameError: for an unknown architecture or parameter.
        InvalidParameterError: for a mistyped parameter or a size (``in_channels``,
            ``num_classes``, ``image_size``) below 1.
    """
    for key, example in _SIZES.items():
        value = params.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 1:
            raise InvalidParameterError(
                f"model '{name}': {key} must be a whole number >= 1, got {value!r}; "
                f"e.g. {key}={example}"
            )
    return MODELS.create(name, **params)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer of a model.

    Args:
        mean: one value per channel.
        std: one value per channel, all ``> 0``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ModelError("Normalize needs as many means as stds, and every std > 0")
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``."""
        return (x - self.mean) / self.std


def input_normalization(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> nn.Module:
    """An architecture's first layer: :class:`Normalize`, or identity when both are None.

    ``mean`` and ``std`` hold one value per input channel, or one value for all channels.

    Raises:
        ModelError: if only one of them is given, or their length fits neither case.
    """
    if mean is None and std is None:
        return nn.Identity()
    if mean is None or std is None:
        raise ModelError("give both mean and std for the input normalisation, or neither")
    for values in (mean, std):
        if len(values) not in (1, in_channels):
            raise ModelError(
                f"the input normalisation has {len(values)} values for {in_channels}-channel "
                f"images; give one value per channel ({in_channels}) or a single value for all"
            )
    return Normalize(mean, std)


def check_logits(logits: torch.Tensor, batch: int, num_classes: int) -> torch.Tensor:
    """Raise a clear :class:`ModelError` unless ``logits`` has shape ``(batch, num_classes)``."""
    if logits.ndim != 2 or logits.shape[0] != batch or logits.shape[1] != num_classes:
        raise ModelError(
            f"the model returned a tensor of shape {tuple(logits.shape)} for a batch of {batch} "
            f"images; robustlab needs logits of shape ({batch}, {num_classes}), one row per "
            "image and one column per class"
        )
    if torch.isnan(logits).any():
        raise ModelError(
            "the model returned NaN logits; check the model's weights (a diverged training "
            "leaves NaN weights: retrain with a lower learning rate) and its normalisation "
            "(inputs are pixels in [0, 1]; a std of 0 divides by zero)"
        )
    return logits
