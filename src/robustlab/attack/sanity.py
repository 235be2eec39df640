"""Sanity flags for robustness evaluations: signs that an attack, not a model, has failed.

In the spirit of AutoAttack's checks and Carlini et al.'s evaluation checklist, each function
looks at one symptom of a broken evaluation and returns a :class:`SanityFlag` when it sees it
(None otherwise):

- :func:`accuracy_rises`: robust accuracy that *rises* with a stronger attack (a larger
  ``eps`` or more steps). A larger ball contains the smaller one, so a working attack never
  does worse; a rise means the optimisation is failing (step size, masked gradients).
- :func:`large_eps_survivors`: an *undefended* model that keeps accuracy at a budget that can
  reach an image of any class (L-inf ``eps >= 0.5``: every pixel can be moved to mid-grey and
  beyond; L2 the same budget's ball, ``0.5 * sqrt(d)``).
- :func:`zero_gradients`: samples whose input gradient is exactly zero, where a gradient
  attack cannot move (saturated softmax, a non-differentiable step, gradient masking).
- :func:`vanishing_gradients`: a large fraction of samples whose input gradient is below
  floating-point resolution (:func:`robustlab.attack.base.vanishing_gradient`: L1 norm under
  float32's machine epsilon), the mark of a saturated softmax or a huge logit scale; the
  cross-entropy gradient no longer guides the attack there.
- :func:`unstable_predictions`: a model or defence that gives different predictions for the
  same input on repeated calls: randomised, so its gradients need EOT and its accuracy is
  itself random.
- :func:`black_box_wins`: a gradient-free (black-box) attack that fools samples every
  white-box attack missed, inside ``autoattack`` or across the attacks of a study at one
  budget. A white-box attacker knows strictly more, so this means the gradients misled the
  white-box attacks: gradient masking or a broken loss.

Example:
    >>> flag = accuracy_rises([0.0, 0.1, 0.3], [0.99, 0.20, 0.45])
    >>> flag.check
    'accuracy-rises'
    >>> flag.message.split(": ")[1]
    '0.2000 at eps=0.1 -> 0.4500 at eps=0.3'
    >>> accuracy_rises([0.0, 0.1, 0.3], [0.99, 0.20, 0.01]) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.errors import InvalidParameterError


@dataclass(frozen=True)
class SanityFlag:
    """A tripped check: which one and what it saw."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


def accuracy_rises(
    strengths: Sequence[float],
    accuracies: Sequence[float],
    *,
    name: str = "eps",
    tolerance: float = 0.005,
) -> SanityFlag | None:
    """Flag accuracy that rises by more than ``tolerance`` as the attack gets stronger.

    Args:
        strengths: attack strengths (``eps`` or steps), in any order.
        accuracies: robust accuracy at each strength, as fractions.
        name: what the strength is called, for the message.
        tolerance: rises up to this much (absolute) are noise, not a flag.
    """
    points = sorted(zip(strengths, accuracies, strict=True))
    worst: tuple[float, float, float, float] | None = None
    lowest = math.inf
    lowest_at = math.nan
    for strength, accuracy in points:
        if accuracy - lowest > tolerance and (
            worst is None or accuracy - lowest > worst[3] - worst[1]
        ):
            worst = (lowest_at, lowest, strength, accuracy)
        if accuracy < lowest:
            lowest, lowest_at = accuracy, strength
    if worst is None:
        return None
    return SanityFlag(
        "accuracy-rises",
        f"accuracy rises with the attack strength: {worst[1]:.4f} at {name}={worst[0]:g} -> "
        f"{worst[3]:.4f} at {name}={worst[2]:g}",
    )


def large_eps(norm: str, dims: int) -> float:
    """The budget from which an undefended classifier must be fooled on every image.

    L-inf: 0.5 (every pixel can reach mid-grey). L2: ``0.5 * sqrt(dims)``, a ball that holds
    the L-inf one.
    """
    return 0.5 if norm == "linf" else 0.5 * math.sqrt(dims)


def large_eps_survivors(
    norm: str, eps: float, dims: int, correct: int, total: int
) -> SanityFlag | None:
    """Flag an undefended model with ``correct`` of ``total`` right at a very large budget."""
    if eps < large_eps(norm, dims) or correct == 0:
        return None
    return SanityFlag(
        "large-eps",
        f"the undefended model keeps {correct} of {total} images right at {norm} eps={eps:g}, "
        "a budget that reaches an image of any class: the attack is too weak here (too few or "
        "too small steps, or masked gradients)",
    )


def zero_gradients(count: int, total: int) -> SanityFlag | None:
    """Flag ``count`` samples (of ``total``) whose input gradient was exactly zero."""
    if count == 0:
        return None
    return SanityFlag(
        "zero-gradient",
        f"{count} of {total} samples have an exactly zero input gradient; a gradient attack "
        "cannot move them (saturated softmax, a non-differentiable step or gradient masking)",
    )


VANISHING_FRACTION = 0.1


def vanishing_gradients(
    count: int, total: int, *, min_fraction: float = VANISHING_FRACTION
) -> SanityFlag | None:
    """Flag ``count`` of ``total`` samples with a vanishing input gradient, if that is many.

    A sample's gradient vanishes when its L1 norm is below the machine epsilon of float32
    (:func:`robustlab.attack.base.vanishing_gradient` explains the threshold); the count
    includes the exactly zero gradients. A few confidently classified samples are normal; the
    flag trips when at least ``min_fraction`` of the samples (10% by default) are affected,
    enough to move a robust accuracy by that much.

    Args:
        count: samples whose first input gradient vanished.
        total: samples attacked.
        min_fraction: the smallest fraction of ``total`` that trips the flag, in ``(0, 1]``.

    Example:
        >>> vanishing_gradients(3, 100) is None
        True
        >>> vanishing_gradients(40, 100).check
        'vanishing-gradient'
    """
    if not 0.0 < min_fraction <= 1.0:
        raise InvalidParameterError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    if total <= 0 or count == 0 or count < min_fraction * total:
        return None
    return SanityFlag(
        "vanishing-gradient",
        f"{count} of {total} samples ({count / total:.0%}) have a vanishing input gradient "
        f"(L1 norm below float32 precision, {torch.finfo(torch.float32).eps:.2g}), typically a "
        "saturated softmax: the cross-entropy gradient there is lost to rounding and the robust "
        "accuracy may be overstated; check that the model returns logits, not probabilities, "
        "and cross-check with a margin-loss attack (CW, AutoAttack's APGD-DLR)",
    )


@torch.no_grad()
def count_unstable(model: nn.Module, x: torch.Tensor, calls: int = 2) -> int:
    """How many images of ``x`` get different predictions over ``calls`` calls of ``model``."""
    first = model(x).argmax(dim=1)
    unstable = torch.zeros_like(first, dtype=torch.bool)
    for _ in range(calls - 1):
        unstable |= model(x).argmax(dim=1) != first
    return int(unstable.sum())


def unstable_predictions(count: int, total: int) -> SanityFlag | None:
    """Flag ``count`` images (of ``total``) predicted differently on repeated calls."""
    if count == 0:
        return None
    return SanityFlag(
        "randomness",
        f"{count} of {total} images get different predictions on repeated calls of the same "
        "input: the model or defence is randomised; attack it with EOT and report the spread",
    )


def black_box_wins(
    black_box: str,
    fooled_only_by_black_box: int,
    total: int,
    *,
    white_box: str = "every white-box attack",
    tolerance: float = 0.002,
) -> SanityFlag | None:
    """Flag samples that a black-box attack fooled after the white-box ones failed on them.

    The flag trips when they are more than ``tolerance`` of the samples (0.2%, the margin of
    AutoAttack's own ``check_square_sr``): one image in a thousand is noise, not masking.

    Args:
        black_box: the black-box attack's name (``square``).
        fooled_only_by_black_box: samples it fooled that no white-box attack fooled.
        total: samples attacked.
        white_box: what the white-box side was, for the message.
        tolerance: the largest share of ``total`` that does not trip the flag.

    Example:
        >>> black_box_wins("square", 0, 100) is None
        True
        >>> black_box_wins("square", 1, 1000) is None
        True
        >>> black_box_wins("square", 7, 100).check
        'black-box-wins'
    """
    if fooled_only_by_black_box <= 0 or fooled_only_by_black_box <= tolerance * total:
        return None
    return SanityFlag(
        "black-box-wins",
        f"the black-box attack {black_box} fooled {fooled_only_by_black_box} of {total} "
        f"samples that {white_box} left standing: it sees only the model's scores, so the "
        "gradients misled the white-box attacks there (gradient masking, a non-differentiable "
        "or saturated step, a broken loss); quote the worst case and distrust gradient-only "
        "numbers for this model",
    )
