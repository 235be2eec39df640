"""``advfilter``: train huang2021's predictive perturbation-aware filter (Sec. 4.2) in two stages.

The network is ``huang2021_advfilter`` (:class:`~robustlab.models.denoisers.AdvFilter`): a
Y-Net, one encoder and two filtering decoders, and a fusion network weighing their outputs by
their uncertainty maps. Training follows Sec. 4.2 on the frozen classifier's adversarial
examples (the same cached examples as ``denoise``, :mod:`robustlab.train.adversarial_examples`):

1. the first ``ynet_epochs`` epochs train the Y-Net with the image loss (Eq. 4): φ_sl's output
   on the examples of ``sl_strengths`` (all twelve by default), φ_m's on those of
   ``m_strengths`` (the three largest, as the paper's text says), so each decoder receives
   gradients only from its own domain's strengths and the encoder from both;
2. the remaining epochs freeze the Y-Net and train the fusion network with the classifier's
   cross-entropy on the fused output (Eqs. 11-12), on every strength.

So ``epochs: [ynet_epochs + fusion epochs]`` in the model entry; a model of fewer epochs than
``ynet_epochs`` is a Y-Net whose fusion is still at its initial weights. The card's accuracy is
the classifier's clean accuracy behind the whole filter.

Example:
    >>> strategy = AdvFilterTraining(ynet_epochs=4, images=500)
    >>> strategy.stage(3), strategy.stage(4)
    ('ynet', 'fusion')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.base import SplitLike
from robustlab.errors import InvalidParameterError
from robustlab.models.denoisers import (
    EPSILONS_ALL,
    EPSILONS_MEDIAN_DECODER,
    AdvFilter,
    uncertainty_map,
)
from robustlab.train.adversarial_examples import AdversarialExamples
from robustlab.train.strategies.denoise import (
    DEFAULT_ATTACK,
    accuracy_behind,
    check_strengths,
    example_spec,
    load_examples,
)
from robustlab.train.strategy import STRATEGIES, FrozenParent, StepContext, Strategy


def _per_image_l1(clean: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    return (clean - denoised).abs().flatten(1).mean(dim=1)


@STRATEGIES.register("advfilter", tags=("huang2021", "denoiser"))
class AdvFilterTraining(Strategy):
    """Train an AdvFilter: the Y-Net's two domains, then the fusion (huang2021 Sec. 4.2).

    Args:
        ynet_epochs: epochs of the first stage (Y-Net); the later ones train the fusion.
        sl_strengths: the strengths φ_sl (small and large) learns from.
        m_strengths: the strengths φ_m learns from.
        attack: the attack making the examples, a spec string without ``eps``.
        images: how many training images are attacked (the first ones; all by default).
        examples_seed: seeds the attack (shared with every denoiser of the same seed).

    Raises:
        InvalidParameterError: for a non-positive ``ynet_epochs`` or bad strengths.
    """

    kind: ClassVar[str] = "denoiser"
    parent_role = "classifier"
    parent_use: ClassVar[Literal["start", "frozen"]] = "frozen"

    def __init__(
        self,
        ynet_epochs: int = 5,
        sl_strengths: Sequence[float] | None = None,
        m_strengths: Sequence[float] | None = None,
        attack: str = DEFAULT_ATTACK,
        images: int | None = None,
        examples_seed: int = 0,
    ) -> None:
        if isinstance(ynet_epochs, bool) or not isinstance(ynet_epochs, int) or ynet_epochs < 1:
            raise InvalidParameterError(
                f"advfilter: ynet_epochs must be a whole number >= 1, got {ynet_epochs!r}"
            )
        self.ynet_epochs = ynet_epochs
        self.sl = check_strengths(
            "advfilter: sl_strengths", EPSILONS_ALL if sl_strengths is None else sl_strengths
        )
        self.m = check_strengths(
            "advfilter: m_strengths",
            EPSILONS_MEDIAN_DECODER if m_strengths is None else m_strengths,
        )
        self.strengths = tuple(sorted(set(self.sl) | set(self.m)))
        self.spec = example_spec(attack, self.strengths, images, examples_seed)
        self.classifier: nn.Module | None = None
        self.examples: AdversarialExamples | None = None

    def describe(self) -> str:
        """``advfilter(Y-Net N epochs, sl ..., m ..., <attack>)``."""
        images = "" if self.spec.images is None else f", {self.spec.images} images"
        return (
            f"advfilter(Y-Net {self.ynet_epochs} epochs, sl {'/'.join(f'{s:g}' for s in self.sl)}, "
            f"m {'/'.join(f'{s:g}' for s in self.m)}, {self.spec.attack}{images})"
        )

    def stage(self, epoch: int) -> str:
        """``"ynet"`` in the first ``ynet_epochs`` epochs (``epoch`` 0-based), then ``"fusion"``."""
        return "ynet" if epoch < self.ynet_epochs else "fusion"

    def prepare(self, parent: FrozenParent | None, split: SplitLike) -> SplitLike:
        """Keep the classifier; the split is its adversarial examples."""
        self.examples = load_examples(parent, split, self.spec, "advfilter")
        assert parent is not None
        self.classifier = parent.model
        return self.examples

    def _masks(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.examples is not None
        eps = self.examples.strength(rows)
        in_sl = torch.zeros_like(eps, dtype=torch.bool)
        in_m = torch.zeros_like(eps, dtype=torch.bool)
        for s in self.sl:
            in_sl |= torch.isclose(eps, torch.tensor(s, device=eps.device))
        for s in self.m:
            in_m |= torch.isclose(eps, torch.tensor(s, device=eps.device))
        return in_sl, in_m

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Stage 1: each decoder's image loss on its strengths; stage 2: the fused output's CE."""
        if self.examples is None or self.classifier is None:
            raise InvalidParameterError("advfilter: prepare() must run before training")
        if not isinstance(model, AdvFilter):
            raise InvalidParameterError(
                f"advfilter trains a huang2021_advfilter, got {type(model).__name__}"
            )
        clean = self.examples.clean(y)
        context.images += len(x)
        if self.stage(context.epoch) == "ynet":
            out = model.ynet(x)
            in_sl, in_m = self._masks(y)
            loss_sl = (_per_image_l1(clean, out.denoised_sl) * in_sl).sum()
            loss_m = (_per_image_l1(clean, out.denoised_m) * in_m).sum()
            return (loss_sl + loss_m) / len(x)
        k, c = model.ynet.kernel_size, model.ynet.in_channels
        with torch.no_grad():  # the Y-Net is frozen in the second stage: only the fusion learns
            model.ynet.eval()
            parts = model.ynet(x)
            maps = torch.cat(
                [uncertainty_map(parts.kernels_sl, c, k), uncertainty_map(parts.kernels_m, c, k)],
                dim=1,
            )
        weight = model.fusion(maps)
        fused = weight * parts.denoised_sl + (1 - weight) * parts.denoised_m
        return F.cross_entropy(self.classifier(fused), self.examples.label(y))

    def score(self, model: nn.Module, split: Any) -> float:
        """The classifier's clean accuracy behind the whole filter."""
        if self.classifier is None:
            raise InvalidParameterError("advfilter: prepare() must run before scoring")
        return accuracy_behind(model, self.classifier, split)
