"""Checks for the project's one currency: float image batches ``(N, C, H, W)`` in ``[0, 1]``.

:func:`check_images` is the one input check of image batches; :func:`checked_images` wraps it
for the entry points of pieces (every degradation's ``__call__`` and every registered
defence's ``forward``): the outermost call checks its input, the calls it makes to other
pieces (a composite's steps, the codec inside the JPEG defence) do not check again.

Example:
    >>> import torch
    >>> check_images(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
    >>> try:
    ...     check_images(torch.full((1, 1, 2, 2), 255.0))
    ... except ValueError as err:
    ...     print(str(err).split(';')[0])
    images must lie in [0, 1], found values in [255, 255]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from robustlab.errors import InvalidParameterError

# A noise-free batch above this is 0-255 pixels: noisy copies around [0, 1] go below 0 first.
_SURELY_0_255 = 1.5

# True while a checked entry point runs: the pieces it calls do not check again.
_INSIDE_CHECKED: ContextVar[bool] = ContextVar("robustlab_inside_checked", default=False)


def check_images(
    x: torch.Tensor, what: str = "images", *, pixel_range: bool = True
) -> torch.Tensor:
    """Return ``x`` if it is a float batch ``(N, C, H, W)`` in ``[0, 1]`` without NaNs, else raise.

    Any floating dtype is accepted (float32 is the project's currency; float16, bfloat16 and
    float64 keep their dtype through every piece), and so is an empty batch. The values cost
    one ``aminmax`` pass: NaN and infinity show up in its result. Tensors on the ``meta``
    device have no values and pass on their shape and dtype alone.

    Args:
        x: the batch.
        what: what the batch is, for the message ("input of GaussianNoise(sigma=0.1)").
        pixel_range: also require values in ``[0, 1]`` (off where noisy copies are expected,
            e.g. in front of a classifier under randomised smoothing; a batch with no
            negative value and a maximum above 1.5 is still refused as 0-255 pixels).

    Raises:
        InvalidParameterError: naming the problem (type, shape, dtype, NaN or infinity, range),
            the batch and the fix.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidParameterError(
            f"{what} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}; "
            "convert with torch.as_tensor(x, dtype=torch.float32)"
        )
    if x.ndim != 4:
        fix = (
            "add a batch dimension with x.unsqueeze(0) for a single image"
            if x.ndim == 3
            else "give a batch of images (N, C, H, W), e.g. x.view(N, 1, H, W) for grey images"
        )
        raise InvalidParameterError(
            f"{what} must be a tensor of shape (N, C, H, W), got shape {tuple(x.shape)}; {fix}"
        )
    if not x.is_floating_point():
        raise InvalidParameterError(
            f"{what} must be floating point in [0, 1], got {x.dtype}; "
            "convert 0-255 images with x.float() / 255"
        )
    if x.numel() == 0 or x.device.type == "meta":
        return x
    lo_t, hi_t = torch.aminmax(x.detach())
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = "NaN" if math.isnan(lo) or math.isnan(hi) else "infinite"
        raise InvalidParameterError(
            f"{what} contain {bad} values; images must be finite numbers in [0, 1]: check "
            "the image loading or the step that produced them"
        )
    # Without the range check (a defence may see noisy, unclipped copies, which go below 0)
    # a batch that is nowhere negative yet well above 1 is still 0-255 pixels, not noise.
    if (pixel_range and (lo < 0.0 or hi > 1.0)) or (lo >= 0.0 and hi > _SURELY_0_255):
        raise InvalidParameterError(
            f"{what} must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}]; robustlab works "
            "in pixel space: divide 0-255 images by 255 (x / 255) and keep normalisation "
            "inside the model"
        )
    return x


@contextmanager
def checked_images(x: torch.Tensor, what: str, *, pixel_range: bool = True) -> Iterator[None]:
    """Check ``x`` with :func:`check_images` unless an enclosing entry point already did.

    The block runs marked as checked, so pieces it calls skip the check: intermediate results
    of a composite (e.g. unclipped noise before a blur) are the composite's business.

    Example:
        >>> import torch
        >>> with checked_images(torch.rand(1, 1, 4, 4), "input"):
        ...     with checked_images(torch.full((1, 1, 4, 4), 2.0), "inner input"):
        ...         "not checked again"
        'not checked again'
    """
    if _INSIDE_CHECKED.get():
        yield
        return
    check_images(x, what, pixel_range=pixel_range)
    token = _INSIDE_CHECKED.set(True)
    try:
        yield
    finally:
        _INSIDE_CHECKED.reset(token)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise ``[0, 1]`` floats to ``uint8`` (round to nearest), for codecs and image files."""
    return x.clamp(0, 1).mul(255).round_().to(torch.uint8)
