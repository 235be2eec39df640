"""A statistical degradation detector: eight per-image statistics and a small classifier on them.

The adaptive filter (:mod:`robustlab.models.adaptive_filter`) needs a detector that tells the
*kind* of degradation of each image. ``ghosh2018_quality`` is a CNN that learns any set of bins
of the registry; this architecture is the cheap alternative for the kinds lin2022 study:
impulse noise, Gaussian noise and JPEG compression against clean images. It computes, per image
(on the channel mean, so any number of channels):

1. the share of pixels more than 0.5 away from their 3x3 median (isolated impulses);
2. the share of pixels exactly 0 and 3. exactly 1 (clipped noise and impulses move them);
4. the share of mid-grey pixels, in (0.05, 0.95) (additive noise fills the background);
5. the mean and 6. the median absolute high-pass residual (the pixel minus its 3x3 mean; the
   median is a robust noise level, as Donoho's MAD estimator);
7. JPEG's blockiness across rows and 8. across columns: the mean absolute step between pixels
   ``8k - 1`` and ``8k`` over the mean step inside the 8x8 blocks (1 where an image has no
   block border);

then standardises them (batch normalisation, learned with the network) and classifies them
with a 32-unit hidden layer. It is trained like the CNN, by the ``quality`` strategy, which sets
the last layer to the number of bins. ``benchmarks/bench_detectors.py`` measures it against the
CNN on lin2022's kinds. The statistics suit noise and JPEG; bins of blur or JPEG 2000 levels
need the CNN, which learns its own features.

Gradients: the shares (1-4) are piecewise constant in the input, so an attack differentiates
only the residual and blockiness statistics; the adaptive filter's soft choice of filter then
gets a partial gradient, which is why its attacks also run from the bare classifier
(oblivious).

Example:
    >>> import torch
    >>> detector = DegradationStatistics(num_classes=4).eval()
    >>> detector(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 4])
    >>> image = torch.zeros(1, 1, 16, 16)
    >>> image[0, 0, 5, 5] = 1.0  # one impulse on a black background
    >>> round(float(image_statistics(image)[0, 0]) * 256)  # pixels far from their median
    1
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.defend.filters import median3x3
from robustlab.models.base import MODELS

#: How many statistics :func:`image_statistics` returns per image.
STATISTICS = 8
#: JPEG's block side.
BLOCK = 8
_IMPULSE = 0.5
_GREY = (0.05, 0.95)


def _blockiness(gray: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean step across 8x8 block borders over the mean step inside blocks, along ``dim``."""
    step = gray.diff(dim=dim).abs()
    border = torch.zeros(step.shape[dim], dtype=torch.bool, device=gray.device)
    border[BLOCK - 1 :: BLOCK] = True  # the step from pixel 8k - 1 to pixel 8k
    if not border.any() or border.all():
        return gray.new_ones(len(gray))
    shape = [1, 1, 1, 1]
    shape[dim] = -1
    mask = border.view(shape).expand_as(step)
    across = step[mask].view(len(gray), -1).mean(dim=1)
    inside = step[~mask].view(len(gray), -1).mean(dim=1)
    return across / (inside + 1e-6)


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """The eight statistics of the module docstring, ``(N, 8)``, for images ``(N, C, H, W)``.

    Args:
        x: images in ``[0, 1]``, at least 3x3.

    Returns:
        One row of statistics per image (float32).
    """
    gray = x.mean(dim=1, keepdim=True)
    flat = gray.flatten(1)
    impulses = ((gray - median3x3(gray)).abs() > _IMPULSE).flatten(1).float().mean(dim=1)
    zeros = (flat == 0).float().mean(dim=1)
    ones = (flat == 1).float().mean(dim=1)
    grey = ((flat > _GREY[0]) & (flat < _GREY[1])).float().mean(dim=1)
    local_mean = F.avg_pool2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    residual = (gray - local_mean).abs().flatten(1)
    return torch.stack(
        [
            impulses,
            zeros,
            ones,
            grey,
            residual.mean(dim=1),
            residual.median(dim=1).values,
            _blockiness(gray, 2),
            _blockiness(gray, 3),
        ],
        dim=1,
    )


@MODELS.register("degradation_statistics", tags=("detector", "quality", "statistical"))
class DegradationStatistics(nn.Module):
    """A degradation-kind detector on eight image statistics (see the module docstring).

    Args:
        num_classes: number of kinds (the ``quality`` strategy sets it to its bins).
        hidden: units of the hidden layer.
    """

    def __init__(self, num_classes: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.standardize = nn.BatchNorm1d(STATISTICS)
        self.classifier = nn.Sequential(
            nn.Linear(STATISTICS, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Kind logits for the batch ``x`` ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.classifier(self.standardize(image_statistics(x)))  # type: ignore[no-any-return]
