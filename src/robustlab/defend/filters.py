"""Classical denoising filters in front of a classifier (lin2022 Section 3.2).

All filters pad by reflection (``d c b | a b c d``, SciPy's ``mirror`` mode), never with zeros,
so a constant image stays constant and dark borders do not appear around the digit. They run
batched on any device. The box and Gaussian filters are separable and run as two banded matrix
products (:mod:`robustlab.separable`). The median is exact everywhere:

- on CPU, for float32 input that needs no gradient and windows of 3 or 5, OpenCV's
  ``medianBlur`` (SIMD sorting networks in registers) runs once on a mosaic of the whole batch:
  every image is reflection-padded first, so OpenCV's own border rule never touches a result;
- with gradients, on GPU, or for float64, the 3x3 median is an exact min / max network in torch
  (differentiable: the gradient goes to the selected pixel); larger windows use kornia.

Speed against the fastest peer library, 1,024 images, one thread (``benchmarks/PEERS.md``):
kornia's ``box_blur`` and ``median_blur``, used at first, reached 0.06x and 0.17x of OpenCV on
28x28 images; the torch min / max network reached 0.49x (about 20 memory passes against
OpenCV's one). The mosaic call measured 0.97-1.39x of OpenCV called per image (the way a user
calls it) on 28x28 digits and 1.6x on 32x32 RGB in the same runs, 1.6x on the digits when
timed alone (padding, ``medianBlur`` and crop take 0.33, 0.72 and 0.32 ms per 1,024). The box
filter measured 2.7-3.5x of the fastest peer.

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
import torch.nn.functional as F
from torch import nn

from robustlab.defend.base import DEFENSES
from robustlab.errors import InvalidParameterError
from robustlab.separable import gaussian_kernel1d, separable_filter

BORDER = "reflect"


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise InvalidParameterError(
            f"filter size must be a positive odd integer, got {size!r}: sizes are odd (1, 3, "
            "5, 7, ...) so that the window has a centre pixel; e.g. size=3"
        )
    return size


def _check_fits(x: torch.Tensor, size: int, who: nn.Module) -> None:
    if x.ndim == 4 and size // 2 >= min(x.shape[-2:]):
        raise InvalidParameterError(
            f"{who!r}: filter size {size} is too large for {x.shape[-2]}x{x.shape[-1]} "
            f"images; use a size of at most {2 * min(x.shape[-2:]) - 1}"
        )


def _sort3(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Elementwise (min, median, max) of three tensors."""
    low, high = torch.minimum(a, b), torch.maximum(a, b)
    return torch.minimum(low, c), torch.maximum(low, torch.minimum(high, c)), torch.maximum(high, c)


# The network is memory-bound: run it on blocks of about this many values, which stay in the
# CPU cache between its ~20 passes (1.6x faster on 28x28, 2x on 3x32x32 images than one block).
_MEDIAN_BLOCK = 64_000
# OpenCV's medianBlur takes float32 only for these window sizes.
_OPENCV_MEDIAN_SIZES = (3, 5)


def _use_opencv(x: torch.Tensor, size: int) -> bool:
    return (
        size in _OPENCV_MEDIAN_SIZES
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not (torch.is_grad_enabled() and x.requires_grad)
        and x.numel() > 0
    )


def median_opencv(x: torch.Tensor, size: int) -> torch.Tensor:
    """Exact median of a CPU float32 batch by one OpenCV ``medianBlur`` call on a mosaic.

    Each ``H x W`` plane is reflection-padded by ``size // 2`` and the planes are stacked into
    one tall single-channel image. A window centred inside a padded plane never reaches the
    next plane, so cropping the padding back gives, plane by plane, the median with reflected
    borders.
    """
    import cv2  # imported here: a 0.1 s import that only this path needs

    n, c, h, w = x.shape
    r = size // 2
    padded = F.pad(x, (r, r, r, r), mode="reflect").contiguous()
    mosaic = padded.view(n * c * (h + 2 * r), w + 2 * r).numpy()
    filtered = torch.from_numpy(cv2.medianBlur(mosaic, size))
    return filtered.view(n, c, h + 2 * r, w + 2 * r)[..., r : r + h, r : r + w].contiguous()


def median3x3(x: torch.Tensor) -> torch.Tensor:
    """Exact 3x3 median with reflected borders, by a min / max network.

    Sort every vertical triple into (low, mid, high); the median of the 3x3 window is then the
    median of (the largest of the three lows, the median of the three mids, the smallest of the
    three highs) of the window's columns, a classic exact identity. About 20 elementwise
    operations instead of a sort per pixel; differentiable.
    """
    per_image = max(x[0].numel(), 1) if len(x) else 1
    block = max(1, _MEDIAN_BLOCK // per_image)
    if x.device.type == "cpu" and len(x) > block:
        return torch.cat([_median3x3_block(part) for part in torch.split(x, block)])
    return _median3x3_block(x)


def _median3x3_block(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    low, mid, high = _sort3(padded[..., :-2, :], padded[..., 1:-1, :], padded[..., 2:, :])

    def columns(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return t[..., :-2], t[..., 1:-1], t[..., 2:]

    l0, l1, l2 = columns(low)
    h0, h1, h2 = columns(high)
    largest_low = torch.maximum(torch.maximum(l0, l1), l2)
    smallest_high = torch.minimum(torch.minimum(h0, h1), h2)
    median_mid = _sort3(*columns(mid))[1]
    return _sort3(largest_low, median_mid, smallest_high)[1]


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
        _check_fits(x, self.size, self)
        return separable_filter(x, (1.0 / self.size,) * self.size)

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
        _check_fits(x, self.size, self)
        if self.size == 1:
            return x
        if _use_opencv(x, self.size):
            return median_opencv(x, self.size)
        if self.size == 3:
            return median3x3(x)
        return kornia.filters.median_blur(x, (self.size, self.size), border_type=BORDER)

    def extra_repr(self) -> str:
        """Parameters shown by ``print(module)``."""
        return f"size={self.size}"


#: Beyond this the kernel's radius (4 sigma) has no meaning for any image (nor fits an int32).
MAX_SIGMA = 1e8


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
        if not 0 < float(sigma) <= MAX_SIGMA:  # also refuses NaN and infinity
            raise InvalidParameterError(
                f"gaussian filter sigma must be > 0 and at most {MAX_SIGMA:g} pixels, got "
                f"{sigma!r}; e.g. sigma=1"
            )
        self.sigma = float(sigma)
        radius = int(4.0 * self.sigma + 0.5)
        self.size = _check_size(size) if size is not None else 2 * max(radius, 1) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter the batch ``x`` ``(N, C, H, W)``."""
        _check_fits(x, self.size, self)
        return separable_filter(x, gaussian_kernel1d(self.sigma, self.size // 2))

    def extra_repr(self) -> str:
        """Parameters shown by ``print(module)``."""
        return f"sigma={self.sigma}, size={self.size}"


__all__ = ["BoxFilter", "GaussianFilter", "MedianFilter"]
