"""Metrics: input quality (PSNR, SSIM) and the classification numbers the papers report.

Example:
    >>> from robustlab.metrics import error_reduction
    >>> round(error_reduction(2607, 705), 1)  # lin2022: median filter, salt-and-pepper 0.3
    73.0
"""

from robustlab.metrics.classification import (
    corruption_error,
    error_reduction,
    precision_recall,
    relative_corruption_error,
    relative_improvement,
)
from robustlab.metrics.image_quality import psnr, ssim

__all__ = [
    "corruption_error",
    "error_reduction",
    "precision_recall",
    "psnr",
    "relative_corruption_error",
    "relative_improvement",
    "ssim",
]
