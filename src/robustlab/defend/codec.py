"""JPEG compression as an input defence (Das et al. 2017; Guo et al. 2018).

The defence codes every image with the real libjpeg through Pillow, exactly as the ``jpeg``
degradation does (:class:`robustlab.degrade.codecs.JPEG`, bit-identical to Pillow's per-image
``save`` and ``open``). It is not differentiable: the output does not depend on the input
through autograd, so a gradient attack through it needs BPDA
(:func:`robustlab.attack.adaptive.bpda`, the identity in the backward pass), which the
adaptive protocol of a study uses automatically (:attr:`JPEGDefense.differentiable`).

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> y = JPEGDefense(quality=50)(x)
    >>> y.shape, bool((y * 255 == (y * 255).round()).all()), y.requires_grad
    (torch.Size([2, 1, 16, 16]), True, False)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from robustlab.defend.base import DEFENSES
from robustlab.degrade.codecs import JPEG

# The JPEG codec is deterministic and never draws from its generator.
_UNUSED_GENERATOR = torch.Generator()


@DEFENSES.register("jpeg", severity="quality", tags=("codec", "non-differentiable"))
class JPEGDefense(nn.Module):
    """JPEG compression at ``quality`` (libjpeg through Pillow) in front of the classifier.

    Args:
        quality: libjpeg quality factor, an integer in ``[1, 100]`` (75 by default, Pillow's
            default; Das et al. 2017 use 20-80).
    """

    differentiable: ClassVar[bool] = False  # adaptive attacks go through BPDA

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.codec = JPEG(quality)
        self.quality = self.codec.quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and decode every image of the batch ``x`` ``(N, C, H, W)``."""
        return self.codec(x, _UNUSED_GENERATOR)

    def extra_repr(self) -> str:
        """Parameters shown by ``print(module)``."""
        return f"quality={self.quality}"
