"""Gaussian blur (ghosh2018, cavey Section V.C, the blur of CIFAR-10-C / ImageNet-C).

The blur is separable, with mirror borders (``d c b | a b c d | c b a``, SciPy's
``mode="mirror"``); :mod:`robustlab.separable` does the filtering as two banded matrix products,
which is exact for any kernel radius and several times faster than convolutions or kornia on
small images (measurements there).

Example:
    >>> import torch
    >>> x = torch.zeros(1, 1, 13, 13)
    >>> x[0, 0, 6, 6] = 1.0
    >>> y = GaussianBlur(sigma=1.0)(x, torch.Generator())
    >>> round(float(y.sum()), 4), round(float(y[0, 0, 6, 6]), 4)
    (1.0, 0.1592)
"""

from __future__ import annotations

import torch

from robustlab.degrade.base import DEGRADATIONS, Degradation
from robustlab.errors import InvalidParameterError
from robustlab.separable import gaussian_kernel1d, separable_filter

#: Beyond this the kernel's radius (4 sigma) has no meaning for any image (nor fits an int32).
MAX_SIGMA = 1e8


def default_radius(sigma: float) -> int:
    """SciPy's kernel half-width for ``truncate=4``: ``int(4 * sigma + 0.5)``."""
    return int(4.0 * sigma + 0.5)


@DEGRADATIONS.register("gaussian_blur", severity="sigma", tags=("blur",))
class GaussianBlur(Degradation):
    """Gaussian blur of standard deviation ``sigma`` pixels, each channel separately.

    Equal (to float32 rounding) to ``scipy.ndimage.gaussian_filter(x, sigma, mode="mirror",
    radius=radius)`` on each image and channel; away from the borders the border mode does not
    matter. The default ``radius = int(4 * sigma + 0.5)`` is SciPy's and scikit-image's
    ``truncate=4``; ghosh2018's "radius 4, standard deviation 1" is ``sigma=1, radius=4``, a
    9 x 9 kernel. Deterministic and differentiable.

    Args:
        sigma: standard deviation of the Gaussian in pixels, ``> 0``.
        radius: kernel half-width in pixels (the kernel has ``2 * radius + 1`` taps), ``>= 0``;
            ``None`` for ``int(4 * sigma + 0.5)``. ``0`` leaves the image unchanged.
    """

    random = False

    def __init__(self, sigma: float = 1.0, radius: int | None = None) -> None:
        sigma = float(sigma)
        if not 0.0 < sigma <= MAX_SIGMA:  # also refuses NaN and infinity
            raise InvalidParameterError(
                f"sigma must be a finite number > 0 pixels, got {sigma} (and at most "
                f"{MAX_SIGMA:g}); e.g. sigma=1"
            )
        if radius is None:
            radius = default_radius(sigma)
        elif isinstance(radius, bool) or int(radius) != radius or radius < 0:
            raise InvalidParameterError(
                f"radius must be an integer >= 0 (or None for int(4 * sigma + 0.5)), got {radius!r}"
            )
        self.sigma = sigma
        self.radius = int(radius)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Blur ``x``; ``generator`` is not used."""
        if self.radius == 0:
            return x.clone()
        y = separable_filter(x, gaussian_kernel1d(self.sigma, self.radius))
        # The weights sum to 1 only up to rounding; keep the output inside [0, 1].
        return y.clamp_(0.0, 1.0)
