"""``incremental``: cavey's incremental learning (Section VI-B), a growing perturbed share.

What cavey says: "The incremental learning technique introduces perturbed images gradually
into the dataset, increasing their quantity with each epoch during training. The neural
network will be introduced to a small proportion of perturbed images during early stages of
training and a large proportion of perturbed images at the final stages of training. Training
begins with the dataset of images containing only 5% of non-perturbed clean images based on
the batch size. A ratio is calculated based on the epoch iteration count and the batch size.
The algorithm determines an appropriate number of perturbed images based on this ratio and
slices the clean and perturbed datasets at a given index."

How this reads it, and what the paper leaves open:

- The start share: the sentence "only 5% of non-perturbed clean images" read literally says
  95% perturbed at the start, which contradicts "a small proportion of perturbed images during
  early stages". We follow the latter: ``start = 0.05`` of each batch is perturbed in the first
  epoch.
- The end share: only "a large proportion" at the end; the default ``end = 1.0`` perturbs
  (almost) every image in the last epoch.
- The shape of the growth is not given ("a ratio [...] based on the epoch iteration count"):
  ``linear`` (default) interpolates from ``start`` in the first epoch to ``end`` in the last,
  ``exponential`` grows geometrically (``start * (end / start) ** t``), and ``step`` holds
  ``steps`` equally spaced shares, each for an equal block of epochs; ``t = epoch /
  (total_epochs - 1)``, and a one-epoch training uses ``end``.
- Whether the ratio moves per batch iteration or per epoch is open ("based on the epoch
  iteration count and the batch size"); following "increasing their quantity with each
  epoch", the share is constant within an epoch and changes between epochs.
- cavey perturbs an exact number of images per batch (its "slice at an index"); here each
  image is perturbed independently with probability equal to the share (``perturb_share``),
  so the expected count is the same and the count varies binomially around it.
- The perturbed images are drawn afresh every batch at levels drawn from ``perturbation``
  (cavey perturbs its data once; a strategy does not see which training image a row is).

The share of epoch ``e`` depends on the total number of epochs, so
:attr:`depends_on_total_epochs` is set: a 30-epoch model is never continued from a cached
10-epoch one (each length trains from scratch).

Example:
    >>> strategy = Incremental({"degradation": "gaussian_noise_variance", "levels": [0.05]})
    >>> [round(strategy.share(e, 5), 4) for e in range(5)]
    [0.05, 0.2875, 0.525, 0.7625, 1.0]
    >>> strategy.share(0, 1)
    1.0
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.train.perturbation import perturb_share
from robustlab.train.strategies.constant import required_perturbation
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy

Schedule = Literal["linear", "exponential", "step"]


@STRATEGIES.register("incremental", tags=("cavey", "perturbed", "schedule"))
class Incremental(Strategy):
    """cavey's incremental learning: the perturbed share of each batch grows epoch by epoch.

    Args:
        perturbation: ``{degradation, levels, parameter, params, draw}`` the perturbed images
            are degraded with (see :class:`~robustlab.train.perturbation.Perturbation`).
        start: the perturbed share in the first epoch (cavey: 5%).
        end: the perturbed share in the last epoch (cavey: "a large proportion").
        schedule: ``linear``, ``exponential`` (geometric, needs ``start > 0``) or ``step``.
        steps: the number of equal steps of the ``step`` schedule (>= 2; only with it).

    Raises:
        InvalidParameterError: for a missing perturbation, shares outside ``[0, 1]`` or
            ``start > end``, an unknown schedule, ``exponential`` from 0, or ``steps`` missing,
            below 2 or given without ``schedule: step``.
    """

    depends_on_total_epochs: ClassVar[bool] = True

    def __init__(
        self,
        perturbation: dict[str, Any],
        start: float = 0.05,
        end: float = 1.0,
        schedule: Schedule = "linear",
        steps: int | None = None,
    ) -> None:
        self.perturbation = required_perturbation("incremental", perturbation)
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidParameterError(
                    f"incremental: {name} must be a number in [0, 1], got {value!r}"
                )
            if not 0.0 <= value <= 1.0:
                raise InvalidParameterError(
                    f"incremental: {name} must be a share in [0, 1], got {value}; "
                    "e.g. start: 0.05, end: 1.0"
                )
        if start > end:
            raise InvalidParameterError(
                f"incremental: start {start} exceeds end {end}; the perturbed share grows, "
                "so give start <= end"
            )
        if schedule not in ("linear", "exponential", "step"):
            raise InvalidParameterError(
                f"incremental: schedule must be linear, exponential or step, got {schedule!r}"
            )
        if schedule == "exponential" and start == 0:
            raise InvalidParameterError(
                "incremental: schedule exponential cannot grow from start 0; give start > 0 "
                "(cavey: 0.05) or schedule: linear"
            )
        if schedule == "step":
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
                raise InvalidParameterError(
                    f"incremental: schedule step needs steps, an integer >= 2, got {steps!r}"
                )
        elif steps is not None:
            raise InvalidParameterError(
                f"incremental: steps ({steps!r}) only applies to schedule: step, not "
                f"{schedule}; remove steps or set schedule: step"
            )
        self.start = float(start)
        self.end = float(end)
        self.schedule: Schedule = schedule
        self.steps = steps

    def share(self, epoch: int, total_epochs: int) -> float:
        """The perturbed share of every batch of ``epoch`` (0-based) out of ``total_epochs``.

        ``start`` in the first epoch, ``end`` in the last (and in a one-epoch training).
        ``step`` splits the epochs into ``min(steps, total_epochs)`` blocks as equal as
        possible (``block = epoch * n // total_epochs``) and block ``k`` of ``n`` gets
        ``start + (end - start) * k / (n - 1)``.

        Example:
            >>> s = Incremental({"degradation": "hot_pixels", "levels": [1]}, schedule="step",
            ...                 steps=3)
            >>> [s.share(e, 6) for e in range(6)]
            [0.05, 0.05, 0.525, 0.525, 1.0, 1.0]
        """
        if not 0 <= epoch < total_epochs:
            raise InvalidParameterError(
                f"incremental: epoch {epoch} outside 0..{total_epochs - 1} (total epochs)"
            )
        if epoch == total_epochs - 1:
            return self.end  # exactly, not up to rounding: 1.0 then perturbs every image
        t = epoch / (total_epochs - 1)
        if self.schedule == "linear":
            return self.start + (self.end - self.start) * t
        if self.schedule == "exponential":
            return self.start * math.pow(self.end / self.start, t)
        assert self.steps is not None
        blocks = min(self.steps, total_epochs)
        block = epoch * blocks // total_epochs
        return self.start + (self.end - self.start) * block / (blocks - 1)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Cross-entropy of the batch with this epoch's share of it perturbed."""
        share = self.share(context.epoch, context.total_epochs)
        if share > 0:
            x = perturb_share(x, share, self.perturbation, context.generator)
        return cross_entropy(model, x, y, context)
