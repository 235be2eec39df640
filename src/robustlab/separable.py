"""Separable 2-D filtering with mirror borders, as two banded matrix products.

A separable filter applies a 1-D kernel along the rows, then along the columns. Each pass is
one product with an ``n x n`` matrix whose rows hold the kernel with the mirrored border
(``d c b | a b c d | c b a``: SciPy's ``mode="mirror"``, PyTorch's ``"reflect"``) folded in,
which is exact for any kernel radius, even one larger than the image. On small images this is
far faster than convolutions (images/s on 2 CPU cores, 1,024 images, sigma-1 Gaussian)::

    method                     1x28x28          3x32x32        3x224x224
    banded matmul (used)   734,000 / 42,700  55,500 / 28,500   529 / 421
    conv1d along W then H   19,200 / 11,100   4,300 /  1,100    92 /  14
    kornia gaussian_blur2d  20,400 / 12,900   6,300 /  4,900   125 / 112

(torch on 1 thread / its default 2 threads on a busy machine.) For images larger than
``MATMUL_MAX_SIDE`` pixels a side the dense products cost too much and two 1-D convolutions
take over. The Gaussian blur degradation and the box and Gaussian defences use this.

Example:
    >>> import torch
    >>> x = torch.zeros(1, 1, 5, 5)
    >>> x[0, 0, 2, 2] = 9.0
    >>> separable_filter(x, (1 / 3, 1 / 3, 1 / 3))[0, 0, 1:4, 1:4]
    tensor([[1., 1., 1.],
            [1., 1., 1.],
            [1., 1., 1.]])
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Above this image side, two 1-D convolutions beat the two dense n x n matrix products.
MATMUL_MAX_SIDE = 1024


def mirror_indices(n: int, radius: int) -> torch.Tensor:
    """Source index of each position ``-radius .. n - 1 + radius`` under mirror extension."""
    positions = torch.arange(-radius, n + radius)
    if n == 1:
        return torch.zeros_like(positions)
    period = 2 * n - 2
    folded = positions.abs() % period
    return torch.where(folded >= n, period - folded, folded)


@functools.lru_cache(maxsize=128)
def kernel_matrix(n: int, kernel: tuple[float, ...]) -> torch.Tensor:
    """The ``n x n`` float64 matrix ``M`` with ``M @ v`` = mirror-bordered filtering of ``v``.

    Args:
        n: length of the filtered axis.
        kernel: the 1-D kernel, odd length ``2 * radius + 1``, centred.
    """
    taps = len(kernel)
    if taps % 2 == 0:
        raise ValueError(f"a separable kernel needs an odd number of taps, got {taps}")
    radius = taps // 2
    rows = torch.arange(n).repeat_interleave(taps)
    cols = mirror_indices(n, radius).unfold(0, taps, 1).reshape(-1)
    weights = torch.tensor(kernel, dtype=torch.float64).repeat(n)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    return matrix.index_put_((rows, cols), weights, accumulate=True)


def _filter_conv(x: torch.Tensor, kernel: tuple[float, ...]) -> torch.Tensor:
    n, c, h, w = x.shape
    taps = len(kernel)
    radius = taps // 2
    weights = torch.tensor(kernel, device=x.device, dtype=x.dtype).view(1, 1, -1)
    along_w = x.index_select(3, mirror_indices(w, radius).to(x.device))
    y = F.conv1d(along_w.reshape(-1, 1, w + taps - 1), weights).view(n, c, h, w)
    along_h = y.transpose(2, 3).index_select(3, mirror_indices(h, radius).to(x.device))
    y = F.conv1d(along_h.reshape(-1, 1, h + taps - 1), weights).view(n, c, w, h)
    return y.transpose(2, 3).contiguous()


def separable_filter(x: torch.Tensor, kernel: tuple[float, ...]) -> torch.Tensor:
    """Filter ``x`` ``(N, C, H, W)`` with ``kernel`` along both axes, mirror borders.

    Differentiable; batched over images and channels; any device.
    """
    h, w = x.shape[-2:]
    if max(h, w) > MATMUL_MAX_SIDE:
        return _filter_conv(x, kernel)
    rows = kernel_matrix(h, kernel).to(device=x.device, dtype=x.dtype)
    cols = kernel_matrix(w, kernel).to(device=x.device, dtype=x.dtype)
    return rows @ x @ cols.T


def gaussian_kernel1d(sigma: float, radius: int) -> tuple[float, ...]:
    """The normalised 1-D Gaussian of ``2 * radius + 1`` taps, computed in float64 like SciPy."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 / (sigma * sigma) * x * x)
    return tuple((kernel / kernel.sum()).tolist())
