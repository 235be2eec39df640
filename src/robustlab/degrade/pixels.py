"""Defective sensor pixels: dead, hot and stuck (cavey Section V.A).

Each image gets exactly ``count`` distinct pixel positions, drawn uniformly without replacement
and independently per image: the ``count`` largest of ``H * W`` uniform draws (a batched random
subset). A dead pixel reads 0 and a hot pixel 1 on every channel; a stuck pixel holds an
independent uniform value in ``[0, 1)`` on each channel (a random grey for one channel).

Example:
    >>> import torch
    >>> x = torch.full((2, 3, 8, 8), 0.5)
    >>> y = HotPixels(count=5)(x, torch.Generator().manual_seed(0))
    >>> (y == 1).all(dim=1).sum(dim=(1, 2)).tolist()
    [5, 5]
"""

from __future__ import annotations

import numbers
from abc import abstractmethod

import torch

from robustlab.degrade.base import DEGRADATIONS, Degradation
from robustlab.errors import InvalidParameterError


def _check_count(count: int) -> int:
    whole = (
        isinstance(count, numbers.Real)
        and not isinstance(count, bool)
        and float(count).is_integer()
    )
    if not whole or count < 0:
        raise InvalidParameterError(f"count must be an integer >= 0 (pixels), got {count!r}")
    return int(count)


class _DefectivePixels(Degradation):
    """Shared machinery: pick ``count`` positions per image and write values there."""

    def __init__(self, count: int = 1) -> None:
        self.count = _check_count(count)

    def _positions(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flat indices ``(N, C, count)`` of ``count`` distinct positions per image."""
        n, c, h, w = x.shape
        if self.count > h * w:
            raise InvalidParameterError(
                f"count must be in [0, H*W] = [0, {h * w}] for {h}x{w} images, got {self.count}"
            )
        scores = torch.rand((n, h * w), generator=generator, device=x.device)
        chosen = scores.topk(self.count, dim=1, sorted=False).indices
        return chosen.unsqueeze(1).expand(n, c, self.count)

    @abstractmethod
    def _values(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | float:
        """What the chosen positions read: one number, or ``(N, C, count)`` values."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Overwrite ``count`` random pixel positions of each image, on every channel."""
        n, c, h, w = x.shape
        index = self._positions(x, generator)
        out = x.clone(memory_format=torch.contiguous_format).view(n, c, h * w)
        out.scatter_(2, index, self._values(x, generator))
        return out.view(n, c, h, w)


@DEGRADATIONS.register("dead_pixels", severity="count", tags=("pixels", "sensor"))
class DeadPixels(_DefectivePixels):
    """Dead pixels: ``count`` random positions per image read 0 on every channel.

    Args:
        count: number of distinct pixels per image, ``0 <= count <= H * W``.
    """

    def _values(self, x: torch.Tensor, generator: torch.Generator) -> float:
        return 0.0


@DEGRADATIONS.register("hot_pixels", severity="count", tags=("pixels", "sensor"))
class HotPixels(_DefectivePixels):
    """Hot (saturated) pixels: ``count`` random positions per image read 1 on every channel.

    Args:
        count: number of distinct pixels per image, ``0 <= count <= H * W``.
    """

    def _values(self, x: torch.Tensor, generator: torch.Generator) -> float:
        return 1.0


@DEGRADATIONS.register("stuck_pixels", severity="count", tags=("pixels", "sensor"))
class StuckPixels(_DefectivePixels):
    """Stuck pixels: ``count`` random positions per image hold a uniform value per channel.

    Each channel of a stuck pixel gets an independent draw from the uniform distribution on
    ``[0, 1)`` (cavey: "a random value, from a continuous uniform distribution"), so a stuck
    pixel of a colour image has a random colour and one of a grey image a random grey.

    Args:
        count: number of distinct pixels per image, ``0 <= count <= H * W``.
    """

    def _values(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = x.shape[:2]
        return torch.rand((n, c, self.count), generator=generator, device=x.device, dtype=x.dtype)
