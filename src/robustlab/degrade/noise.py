"""Additive and impulse noise (lin2022 Section 3.1, aghdam2016, cavey Section V.B).

Three parametrisations of the same clipped additive Gaussian noise are registered, one per way
the papers state it: ``gaussian_noise`` (standard deviation on the [0, 1] scale),
``gaussian_noise_255`` (standard deviation on the 0-255 scale) and ``gaussian_noise_variance``
(variance on the [0, 1] scale).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.full((2, 1, 8, 8), 0.5)
    >>> y = SaltPepper(amount=1.0)(x, g)
    >>> bool(((y == 0) | (y == 1)).all())
    True
"""

from __future__ import annotations

import math

import torch

from robustlab.degrade.base import DEGRADATIONS, Degradation, check_fraction, check_non_negative
from robustlab.errors import InvalidParameterError


@DEGRADATIONS.register("gaussian_noise", severity="sigma", tags=("noise",))
class GaussianNoise(Degradation):
    """Additive zero-mean Gaussian noise of standard deviation ``sigma`` on the [0, 1] scale.

    lin2022 calls ``sigma`` the noise "amplitude" (0.1, 0.2, 0.3). By default the result is
    clipped to ``[0, 1]``, as an image sensor saturates. ``clip=False`` keeps ``x + sigma * n``
    unclipped, so pixels leave ``[0, 1]``: the reading of lin2022's pipeline (MNIST vectors
    plus ``np.random.normal(0, a, 784)``, no clipping mentioned) that reproduces its tables
    (docs/replication-gaps.md, section 1). Clipping is what lets a median filter help: on a
    black background it turns zero-mean noise into a one-sided haze of mean
    ``sigma / sqrt(2 pi)``. Every pixel and channel gets an independent draw.

    Args:
        sigma: standard deviation of the noise, ``>= 0``.
        clip: clip the result to ``[0, 1]`` (default) or leave it unclipped.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 64, 64)
        >>> g = torch.Generator().manual_seed(0)
        >>> float(GaussianNoise(sigma=0.3)(x, g).min()) >= 0.0
        True
        >>> float(GaussianNoise(sigma=0.3, clip=False)(x, g).min()) < 0.0
        True
    """

    def __init__(self, sigma: float = 0.1, clip: bool = True) -> None:
        self.sigma = check_non_negative("sigma", sigma)
        if not isinstance(clip, bool):
            raise InvalidParameterError(f"gaussian_noise: clip must be true or false, got {clip!r}")
        self.clip = clip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Add noise drawn from ``generator``; clip to ``[0, 1]`` unless ``clip`` is false."""
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        noisy = noise.mul_(self.sigma).add_(x)
        return noisy.clamp_(0.0, 1.0) if self.clip else noisy


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
        if self.amount == 0.0:
            return x.clone()
        # floor(2u / amount) is 0 (pepper) for u < amount / 2, 1 (salt) for u < amount and
        # >= 2 (untouched) otherwise: one pass fewer than two comparisons and two selections.
        level = u.mul_(2.0 / self.amount).floor_()
        return torch.where(level < 2.0, level, x)


def _add_clipped_gaussian(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``clip(x + std * N(0, 1), 0, 1)`` with one independent draw per pixel and channel."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return noise.mul_(std).add_(x).clamp_(0.0, 1.0)


@DEGRADATIONS.register("gaussian_noise_variance", severity="variance", tags=("noise",))
class GaussianNoiseVariance(Degradation):
    """Additive zero-mean Gaussian noise given by its ``variance`` on the [0, 1] scale (cavey).

    The standard deviation is ``sqrt(variance)``; the result is clipped to ``[0, 1]``. This is
    scikit-image's ``random_noise(x, mode="gaussian", mean=0, var=variance, clip=True)``, the
    parametrisation cavey calls "variance" (0.001 to 0.05, i.e. standard deviations 0.032 to
    0.224). Every pixel and channel gets an independent draw.

    Args:
        variance: variance of the noise on the [0, 1] scale, ``>= 0``.

    Example:
        >>> import torch
        >>> x = torch.full((1, 1, 64, 64), 0.5)
        >>> y = GaussianNoiseVariance(variance=0.01)(x, torch.Generator().manual_seed(0))
        >>> round(float((y - x).std()), 1)
        0.1
    """

    def __init__(self, variance: float = 0.01) -> None:
        self.variance = check_non_negative("variance", variance)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Add noise of standard deviation ``sqrt(variance)`` and clip to ``[0, 1]``."""
        return _add_clipped_gaussian(x, math.sqrt(self.variance), generator)


@DEGRADATIONS.register("gaussian_noise_255", severity="sigma", tags=("noise",))
class GaussianNoise255(Degradation):
    """Additive zero-mean Gaussian noise with ``sigma`` on the 0-255 pixel scale (aghdam2016).

    The standard deviation on the [0, 1] scale is ``sigma / 255``; the result is clipped to
    ``[0, 1]`` but not rounded to the 256 integer levels (aghdam2016 states neither). aghdam2016
    sweeps sigma in {1, 2, 4, 8, 10, 14, 18, 20, 25, 30, 35, 40}, i.e. a PSNR of about 48 dB down
    to 16 dB. Every pixel and channel gets an independent draw.

    Args:
        sigma: standard deviation of the noise in 0-255 pixel units, ``>= 0``.

    Example:
        >>> import torch
        >>> x = torch.full((1, 1, 64, 64), 0.5)
        >>> y = GaussianNoise255(sigma=25.5)(x, torch.Generator().manual_seed(0))
        >>> round(float((y - x).std()), 1)
        0.1
    """

    def __init__(self, sigma: float = 8.0) -> None:
        self.sigma = check_non_negative("sigma", sigma)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Add noise of standard deviation ``sigma / 255`` and clip to ``[0, 1]``."""
        return _add_clipped_gaussian(x, self.sigma / 255.0, generator)
