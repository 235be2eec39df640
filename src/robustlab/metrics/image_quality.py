"""Per-image quality of a degraded input against the clean one: PSNR and SSIM.

Both are computed here in a few batched tensor operations rather than through torchmetrics,
because they run on every degraded batch of a sweep: torchmetrics' PSNR computes the squared
error twice, and its SSIM filters five maps with a full 11x11 kernel, which on 2,000 MNIST images
took longer than the classifier's forward pass (1.6 s against 1.1 s, measured on 2 cores). The
SSIM below filters separably over the "valid" region only, which is exactly scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)``: that function also discards the border where the window leaves the image.
The tests check both functions against scikit-image and torchmetrics.

PSNR of identical images is infinite; callers average finite values and count the others.

Example:
    >>> import torch
    >>> clean = torch.full((2, 1, 16, 16), 0.5)
    >>> noisy = clean + 0.1 * torch.ones_like(clean)
    >>> psnr(noisy, clean).round().tolist()
    [20.0, 20.0]
    >>> ssim(clean, clean).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import torch

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's truncation: an 11-tap window for sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of ``degraded`` against ``clean`` (``inf`` where identical)."""
    mse = (degraded - clean).square().flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse)


def _window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (weights / weights.sum()).to(dtype)


def _band(window: torch.Tensor, size: int) -> torch.Tensor:
    """``(size - k + 1, size)`` matrix whose rows apply ``window`` at every valid position."""
    k = len(window)
    rows = size - k + 1
    band = torch.zeros(rows, size, dtype=window.dtype, device=window.device)
    index = torch.arange(rows, device=window.device)[:, None] + torch.arange(
        k, device=window.device
    )
    band.scatter_(1, index, window.expand(rows, k))
    return band


def ssim(degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each image (over channels and the valid region), Gaussian window sigma 1.5.

    Images smaller than the 11x11 window fall back to a window as large as the image allows.
    """
    n, c, h, w = degraded.shape
    window = _window(degraded.device, degraded.dtype)
    side = min(h, w)
    if len(window) > side:  # tiny images: the largest odd window that fits
        keep = side if side % 2 else side - 1
        cut = (len(window) - keep) // 2
        window = window[cut : cut + keep] / window[cut : cut + keep].sum()
    x = degraded.reshape(n * c, h, w)
    y = clean.reshape(n * c, h, w)
    maps = torch.stack([x, y, x * x, y * y, x * y], dim=1)  # (n*c, 5, h, w)
    # "Valid" separable filtering as two banded matrix products: much faster on CPU than
    # single-channel conv2d over tens of thousands of small maps.
    blurred = _band(window, h) @ maps @ _band(window, w).T
    mu_x, mu_y, xx, yy, xy = blurred.unbind(dim=1)
    # scikit-image's population (not sample) covariances: use_sample_covariance=False.
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return index.reshape(n, -1).mean(dim=1)


__all__ = ["psnr", "ssim"]
