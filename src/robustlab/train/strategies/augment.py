"""``augment``: aghdam2016's noise-augmented training (Section 4, "Augmenting Noisy Images").

aghdam2016: "we generated 15 noisy images for each image in the training set with different
signal-to-noise ratios. Then, the ConvNets are trained using the new noisy training sets."
Here every training batch ``x`` of ``B`` images becomes ``[x, copy 1, ..., copy K]``: ``K``
degraded copies of the batch, copy ``k`` at level ``k``, and the loss is the mean cross-entropy
over all ``(1 + K) * B`` images in one forward pass (``clean: false`` drops the clean block).

Levels:

- a list of levels and ``copies`` unset: one copy per listed level, in order, every image of
  copy ``k`` at exactly ``levels[k]`` (the paper's fixed set of SNRs);
- ``copies: K`` with a range ``{low, high}`` (or with a list): each copy draws its levels
  from ``perturbation`` like any perturbed training (per image by default, once per batch per
  copy with ``draw: per_batch``).

aghdam2016's SNRs in our levels: the paper gives noise as a standard deviation ``sigma`` on the
0-255 scale (degradation ``gaussian_noise_255``) and reports it as the PSNR of the noisy image,
``PSNR = 20 log10(255 / sigma)`` dB, i.e. ``sigma = 255 * 10 ** (-PSNR / 20)`` (before
clipping, which lowers the effective noise a little): "PSNR ~ 50" is sigma 1 (48.1 dB) and
"PSNR ~ 15" is sigma 40 (16.1 dB); its test sweep is sigma in {1, 2, 4, 8, 10, 14, 18, 20, 25,
30, 35, 40}. The paper does not list the 15 training SNRs. Assumption: the 15 training levels
span the same range, e.g. the twelve test sigmas plus 6, 12 and 16::

    perturbation:
      degradation: gaussian_noise_255
      levels: [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30, 35, 40]

(or ``levels: {low: 1, high: 40}`` with ``copies: 15`` for levels drawn per image). The paper
builds its augmented set once, before training; here copies are drawn afresh for every batch
from the strategy's generator (reproducible per seed and epoch), and the clean image and its
copies share one optimisation step instead of being shuffled apart. The paper also keeps the
clean images (its noisy sets augment the clean one), hence ``clean: true`` by default.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.train.strategy import StepContext
    >>> strategy = Augment({"degradation": "gaussian_noise_255", "levels": [1, 20, 40]})
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> context = StepContext(0, 1, torch.Generator().manual_seed(0), num_classes=3)
    >>> loss = strategy.loss(model, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), context)
    >>> strategy.copies, context.images  # (1 + 3) * 2 images
    (3, 8)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.train.strategies.constant import required_perturbation
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy


@STRATEGIES.register("augment", tags=("aghdam2016", "perturbed", "copies"))
class Augment(Strategy):
    """aghdam2016's noise augmentation: each image plus ``copies`` degraded copies per step.

    Args:
        perturbation: ``{degradation, levels, parameter, params, draw}`` the copies are
            degraded with (see :class:`~robustlab.train.perturbation.Perturbation`).
        copies: the number of degraded copies per image. Unset with a list of levels: one copy
            per listed level, in order. Required with a range of levels (each copy then draws
            its levels); with a list it draws each copy's levels from the list.
        clean: keep the clean images in the batch (the paper does).

    Raises:
        InvalidParameterError: for a missing perturbation, ``copies`` missing with a range or
            below 1, or a ``clean`` that is not a boolean.
    """

    def __init__(
        self, perturbation: dict[str, Any], copies: int | None = None, clean: bool = True
    ) -> None:
        self.perturbation = required_perturbation("augment", perturbation)
        values = self.perturbation.values
        if copies is None:
            if values is None:
                raise InvalidParameterError(
                    "augment: copies is required when the levels are a range "
                    f"({self.perturbation.describe()}); give copies: K (aghdam2016: 15), or "
                    "a list of levels for one copy per level"
                )
            self.fixed: torch.Tensor | None = torch.tensor(values, dtype=torch.float64)
            self.copies = len(values)
        else:
            if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
                raise InvalidParameterError(
                    f"augment: copies must be an integer >= 1, got {copies!r}; aghdam2016 uses 15"
                )
            self.fixed = None
            self.copies = copies
        if not isinstance(clean, bool):
            raise InvalidParameterError(
                f"augment: clean must be true or false, got {clean!r} (true keeps the clean "
                "image beside its copies)"
            )
        self.clean = clean

    def levels(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """The ``copies * batch`` levels of the stacked copies (copy-major, float64).

        Fixed levels repeat ``levels[k]`` over copy ``k``'s block; otherwise each copy draws
        its block from the perturbation (per image, or once per copy with ``per_batch``).
        """
        if self.fixed is not None:
            return self.fixed.to(generator.device).repeat_interleave(batch)
        if self.perturbation.draw == "per_image":
            return self.perturbation.draw_levels(self.copies * batch, generator)
        return torch.cat(
            [self.perturbation.draw_levels(batch, generator) for _ in range(self.copies)]
        )

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Mean cross-entropy over ``[x, copy 1, ..., copy K]`` (without ``x`` if not clean)."""
        stacked = x.repeat(self.copies, 1, 1, 1)
        levels = self.levels(len(x), context.generator)
        copies = self.perturbation.apply_levels(stacked, levels, context.generator)
        blocks = [x, copies] if self.clean else [copies]
        batch = torch.cat(blocks)
        labels = y.repeat(len(batch) // len(y))
        return cross_entropy(model, batch, labels, context)
