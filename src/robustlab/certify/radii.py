"""Which L2 radii a randomised-smoothing certificate can reach, and where to report it.

With ``n`` estimation draws and failure probability ``alpha``, the best an image can do is all
``n`` draws on the top class: then ``p_lower = alpha ** (1 / n)`` (the one-sided Clopper-Pearson
bound for ``n`` of ``n``) and the radius is ``sigma * Phi^{-1}(alpha ** (1 / n))``. No image is
ever certified beyond it, so certified accuracy there is zero by construction, whatever the
model: it is a property of the sampling budget. At ``alpha = 0.001`` the cap is ``3.81 sigma``
for Cohen et al.'s ``n = 100,000``, ``3.20 sigma`` for ``n = 10,000`` and ``2.46 sigma`` for
``n = 1,000``.

Example:
    >>> round(largest_radius(0.25, n=10_000, alpha=0.001), 4)
    0.7996
    >>> radius_grid(0.7996)
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    >>> representative_radius([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

#: Grid steps tried by :func:`radius_grid`, finest first.
STEPS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def largest_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest L2 radius ``n`` draws can certify: ``sigma * Phi^{-1}(alpha ** (1 / n))``.

    Args:
        sigma: the noise standard deviation (> 0).
        n: estimation draws per image (>= 1).
        alpha: the failure probability (0 < alpha < 1).

    Returns:
        The radius (0 when even ``n`` hits out of ``n`` do not reach ``p_lower > 0.5``).

    Example:
        >>> round(largest_radius(1.0, n=100_000, alpha=0.001), 3)
        3.811
    """
    bound = alpha ** (1.0 / n)
    return sigma * NormalDist().inv_cdf(bound) if bound > 0.5 else 0.0


def radius_grid(largest: float, points: int = 10) -> list[float]:
    """Radii from 0 up to ``largest`` on the finest round step giving at most ``points`` > 0.

    Args:
        largest: the largest radius the grid may hold (e.g. :func:`largest_radius`).
        points: the most positive radii.

    Returns:
        ``[0, step, 2 step, ...]``, every value ``<= largest``; ``[0.0]`` when ``largest`` is 0.

    Example:
        >>> radius_grid(1.599)
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    """
    if not largest > 0:
        return [0.0]
    step = next((s for s in STEPS if largest / s <= points + 1e-9), largest / points)
    count = math.floor(largest / step + 1e-9)
    return [round(i * step, 6) for i in range(count + 1)]


def representative_radius(radii: Sequence[float]) -> float:
    """One radius to summarise a curve by: the largest report radius in ``(0, 1]``.

    When every positive radius exceeds 1, the median of the positive radii (the lower one of
    an even count, so it is a grid value); 0 when the grid holds no positive radius.

    Example:
        >>> representative_radius([0.0, 0.1, 0.2, 0.3])
        0.3
        >>> representative_radius([2.0, 3.0, 4.0, 5.0])
        3.0
    """
    positive = sorted(float(r) for r in radii if r > 0)
    if not positive:
        return 0.0
    small = [r for r in positive if r <= 1.0 + 1e-9]
    if small:
        return small[-1]
    return positive[(len(positive) - 1) // 2]
