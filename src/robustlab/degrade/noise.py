"""Additive and impulse noise (lin2022 Section 3.1).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.full((2, 1, 8, 8), 0.5)
    >>> y = SaltPepper(amount=1.0)(x, g)
    >>> bool(((y == 0) | (y == 1)).all())
    True
"""

from __future__ import annotations

import torch

from robustlab.degrade.base import DEGRADATIONS, Degradation, check_fraction, check_non_negative


@DEGRADATIONS.register("gaussian_noise", severity="sigma", tags=("noise",))
class GaussianNoise(Degradation):
    """Additive zero-mean Gaussian noise of standard deviation ``sigma`` on the [0, 1] scale.

    lin2022 calls ``sigma`` the noise "amplitude" (0.1, 0.2, 0.3). The result is clipped to
    ``[0, 1]``, as an image sensor saturates. Every pixel and channel gets an independent draw.

    Args:
        sigma: standard deviation of the noise, ``>= 0``.
    """

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = check_non_negative("sigma", sigma)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Add noise drawn from ``generator`` and clip to ``[0, 1]``."""
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return noise.mul_(self.sigma).add_(x).clamp_(0.0, 1.0)


@DEGRADATIONS.register("salt_pepper", severity="amount", tags=("noise", "impulse"))
class SaltPepper(Degradation):
    """Salt-and-pepper (impulse) noise: a fraction ``amount`` of pixels set to 0 or 1.

    Each pixel location is hit independently with probability ``amount``; a hit pixel is
    pepper (0) or salt (1) with equal probability, on all channels at once (a dead or saturated
    sensor site). The expected fraction of hit pixels is ``amount``, half salt and half pepper.

    Args:
        amount: probability that a pixel is replaced, in ``[0, 1]``.
    """

    def __init__(self, amount: float = 0.1) -> None:
        self.amount = check_fraction("amount", amount)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Set pixels to 0 or 1 where a uniform draw from ``generator`` falls below ``amount``."""
        n, _, h, w = x.shape
        u = torch.rand((n, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
        half = self.amount / 2
        out = x.masked_fill(u < half, 0.0)
        return out.masked_fill_((u >= half) & (u < self.amount), 1.0)
