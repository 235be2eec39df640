"""Checks for the project's one currency: float32 image batches ``(N, C, H, W)`` in ``[0, 1]``.

Example:
    >>> import torch
    >>> check_images(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import torch

from robustlab.errors import InvalidParameterError


def check_images(x: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Return ``x`` if it is a float batch ``(N, C, H, W)`` in ``[0, 1]`` without NaNs, else raise.

    Raises:
        InvalidParameterError: naming the problem (shape, dtype, NaN, range) and the fix.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidParameterError(
            f"{what} must be a tensor of shape (N, C, H, W), got {shape}; "
            "add a batch dimension with x.unsqueeze(0) for a single image"
        )
    if not x.is_floating_point():
        raise InvalidParameterError(
            f"{what} must be floating point in [0, 1], got {x.dtype}; use x.float() / 255"
        )
    if torch.isnan(x).any():
        raise InvalidParameterError(f"{what} contain NaN values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidParameterError(
            f"{what} must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}]; "
            "robustlab works in pixel space: divide uint8 images by 255 and keep "
            "normalisation inside the model"
        )
    return x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise ``[0, 1]`` floats to ``uint8`` (round to nearest), for codecs and image files."""
    return x.clamp(0, 1).mul(255).round_().to(torch.uint8)
