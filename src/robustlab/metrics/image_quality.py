"""Per-image quality of a degraded input against the clean one: PSNR and SSIM.

Both come from torchmetrics (``data_range=1``, one value per image); PSNR of identical images is
infinite, so callers average finite values only and report how many were identical.

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
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


def psnr(degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of ``degraded`` against ``clean`` (``inf`` where identical)."""
    mse = (degraded - clean).square().flatten(1).mean(dim=1)
    # torchmetrics clamps the MSE away from 0; identical images must read as infinite instead.
    values = peak_signal_noise_ratio(
        degraded, clean, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return torch.where(mse == 0, torch.full_like(values, float("inf")), values)


def ssim(degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """SSIM of each image of ``degraded`` against ``clean`` (11x11 Gaussian window, sigma 1.5)."""
    side = min(degraded.shape[-2:])
    kernel = min(11, side - (1 - side % 2))
    values = structural_similarity_index_measure(
        degraded, clean, data_range=1.0, reduction="none", kernel_size=kernel
    )
    assert isinstance(values, torch.Tensor)
    return values
