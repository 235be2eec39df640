"""Classical denoising filters in front of a classifier (lin2022 Section 3.2).

All filters pad by reflection (``d c b | a b c d``, SciPy's ``mirror`` mode), never with zeros,
so a constant image stays constant and dark borders do not appear around the digit. They run
batched on any device through kornia; the box and Gaussian filters are differentiable, the median
filter has the (sparse) gradient of the selected element.

Example:
    >>> import torch
    >>> flat = torch.full((1, 1, 6, 6), 0.25)
    >>> bool(torch.equal(MedianFilter(3)(flat), flat))
    True
    >>> bool(torch.allclose(BoxFilter(3)(flat), flat))
    True
"""

from __future__ import annotations

import kornia.filters
import torch
from torch import nn

from robustlab.defend.base import DEFENSES
from robustlab.errors import InvalidParameterError

BORDER = "reflect"


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise InvalidParameterError(f"filter size must be a positive odd integer, got {size!r}")
    return size


def _check_fits(x: torch.Tensor, size: int) -> None:
    if size // 2 >= min(x.shape[-2:]):
        raise InvalidParameterError(
            f"filter size {size} is too large for {x.shape[-2]}x{x.shape[-1]} images; "
            f"use a size below {2 * min(x.shape[-2:]) - 1}"
        )


@DEFENSES.register("box", severity="size", tags=("filter", "linear"))
class BoxFilter(nn.Module):
    """Box (mean) filter: each pixel becomes the mean of its ``size`` x ``size`` window.

    Args:
        size: odd window side in pixels (lin2022's "box filter"; 3 by default).
    """

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = _check_size(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter the batch ``x`` ``(N, C, H, W)``."""
        _check_fits(x, self.size)
        return kornia.filters.box_blur(x, (self.size, self.size), border_type=BORDER)

    def extra_repr(self) -> str:
        """Parameters shown by ``print(module)``."""
        return f"size={self.size}"


@DEFENSES.register("median", severity="size", tags=("filter", "nonlinear"))
class MedianFilter(nn.Module):
    """Median filter: each pixel becomes the median of its ``size`` x ``size`` window.

    Removes impulse (salt-and-pepper) noise while keeping edges (lin2022 Algorithm 2).

    Args:
        size: odd window side in pixels (3 by default).
    """

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = _check_size(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter the batch ``x`` ``(N, C, H, W)``."""
        _check_fits(x, self.size)
        return kornia.filters.median_blur(x, (self.size, self.size), border_type=BORDER)

    def extra_repr(self) -> str:
        """Parameters shown by ``print(module)``."""
        return f"size={self.size}"


@DEFENSES.register("gaussian", severity="sigma", tags=("filter", "linear"))
class GaussianFilter(nn.Module):
    """Gaussian smoothing filter of standard deviation ``sigma`` pixels.

    Args:
        sigma: standard deviation of the kernel in pixels, ``> 0``.
        size: odd kernel side; by default ``2 * ceil(4 * sigma) + 1``, i.e. SciPy's
            ``gaussian_filter`` truncation at four standard deviations.
    """

    def __init__(self, sigma: float = 1.0, size: int | None = None) -> None:
        super().__init__()
        if not float(sigma) > 0:
            raise InvalidParameterError(f"gaussian filter sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)
        radius = int(4.0 * self.sigma + 0.5)
        self.size = _check_size(size) if size is not None else 2 * max(radius, 1) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter the batch ``x`` ``(N, C, H, W)``."""
        _check_fits(x, self.size)
        return kornia.filters.gaussian_blur2d(
            x, (self.size, self.size), (self.sigma, self.sigma), border_type=BORDER
        )

    def extra_repr(self) -> str:
        """Parameters shown by ``print(module)``."""
        return f"sigma={self.sigma}, size={self.size}"


__all__ = ["BoxFilter", "GaussianFilter", "MedianFilter"]
