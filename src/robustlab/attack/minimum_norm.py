"""Minimum-norm attacks: per image, the smallest perturbation that flips the prediction.

A bounded attack (PGD, APGD, Square) answers "is this image robust at ``eps``?" for one
``eps``; a minimum-norm attack answers it for every ``eps`` at once: it returns, per image, the
smallest adversarial perturbation it found, and the image is robust at ``eps`` exactly when
that perturbation is larger than ``eps`` (or none was found). One run therefore draws the whole
robust-accuracy-vs-eps curve (:func:`robust_accuracy_curve`).

:class:`MinimumNormAttack` is the common base: subclasses implement :meth:`search` (the
unbounded search; an image the search cannot flip comes back unchanged). With ``eps`` set the
attack is also a bounded one, usable beside PGD in a worst case and inside ``autoattack``:
a perturbation larger than ``eps`` is discarded and the image returned unchanged.

Example:
    >>> import numpy as np
    >>> distance = np.array([0.0, 0.2, 0.5, 0.0])
    >>> fooled = np.array([True, True, True, False])  # the last one was never flipped
    >>> robust_accuracy_curve(distance, fooled, [0.0, 0.1, 0.3, 1.0]).tolist()
    [0.75, 0.75, 0.5, 0.25]
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from robustlab.attack.base import Attack, AttackResult, check_eps

#: Relative slack on ``eps`` when a found perturbation is compared with the budget: its norm is
#: recomputed in float32 and may exceed a projection's target by rounding.
EPS_SLACK = 1e-5
#: Largest absolute slack of a bounded minimum-norm attack: a returned perturbation is at most
#: ``eps + min(BOUND_SLACK, eps * EPS_SLACK + 1e-7)`` (float32 rounding of a projection).
BOUND_SLACK = 1e-6


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample L-inf or L2 norm of ``delta`` ``(N, ...)``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def check_optional_eps(eps: float | None) -> float | None:
    """``None`` (unbounded) or a valid budget (:func:`robustlab.attack.base.check_eps`)."""
    return None if eps is None else check_eps(eps)


class MinimumNormAttack(Attack):
    """Base of attacks that search each image's smallest adversarial perturbation.

    Subclasses set :attr:`norm` and :attr:`eps` (None: unbounded) and implement :meth:`search`.
    """

    minimum_norm: ClassVar[bool] = True
    eps: float | None = None

    @abstractmethod
    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """The smallest adversarial example found per image (the image itself where none)."""

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """:meth:`search`, then, with ``eps`` set, drop perturbations larger than ``eps``."""
        result = self.search(model, x, y, generator)
        if self.eps is not None:
            size = perturbation_norm(result.adversarial - x, self.norm)
            outside = size > self.eps + min(BOUND_SLACK, self.eps * EPS_SLACK + 1e-7)
            result.adversarial = torch.where(
                outside.view(-1, *([1] * (x.ndim - 1))), x, result.adversarial
            )
        return result


def robust_accuracy_curve(
    distance: np.ndarray, fooled: np.ndarray, budgets: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Robust accuracy at each budget from one minimum-norm run.

    An image counts as robust at ``eps`` when the attack never flipped it (``fooled`` false:
    its prediction is still the label) or flipped it only with a perturbation larger than
    ``eps``. An image misclassified without any perturbation has distance 0 and is robust
    nowhere.

    Args:
        distance: ``(N,)`` norm of each image's returned perturbation.
        fooled: ``(N,)`` whether the returned example is misclassified.
        budgets: the budgets to evaluate.

    Returns:
        ``(len(budgets),)`` fractions of robust images.
    """
    distance = np.asarray(distance, dtype=np.float64)
    fooled = np.asarray(fooled, dtype=bool)
    if len(distance) == 0:
        return np.zeros(len(budgets))
    limits = np.asarray(budgets, dtype=np.float64)[:, None] * (1 + EPS_SLACK)
    robust = ~fooled[None, :] | (distance[None, :] > limits)
    return np.asarray(robust.mean(axis=1))
