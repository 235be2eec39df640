"""``adversarial``: adversarial training (Madry et al. 2018), as huang2021 Section 5 (Eq. 13).

huang2021 combines its denoisers with *adversarially trained* classifiers, models trained on
the min-max objective of its Eq. (13), ``min_theta E max_{||delta|| <= eps} J(phi(I + delta),
y)``, whose inner maximisation is approximated, as in Madry et al. (2018), by an attack run
against the model being trained. This strategy crafts, every step, adversarial examples for
``share`` of the batch with any registered attack (:mod:`robustlab.attack`) and takes the
cross-entropy of the mixed batch:

- ``pgd:eps=0.3,steps=40`` (default): Madry et al.'s MNIST setting (40 steps of ``2.5 * eps /
  40`` from a random start in the L-inf ball of radius 0.3);
- ``fgsm:eps=0.1,random_start=true,step_size=0.125``: Wong et al.'s (2020) "fast" adversarial
  training, one FGSM step of ``1.25 * eps`` from a uniformly random start;
- ``share: 0.5``: half clean, half adversarial images (Goodfellow et al. 2015 weight the clean
  and the adversarial loss 1:1; Kurakin et al. 2017 mix them in one batch, as here).

Assumptions where the papers are silent: the attack runs with the model in eval mode and its
parameters frozen, so neither the attack's forward passes nor their dropout or batch-norm
statistics touch the model; only the final training forward pass updates batch-norm running
statistics. The adversarial images are ``round(share * B)`` images of each batch (exactly half
for ``share: 0.5``; the count rounds half up), drawn without replacement from the strategy's
generator, which also seeds the attack's random start. huang2021 evaluates published
adversarially trained models and gives no training settings of its own.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.train.strategy import StepContext
    >>> strategy = Adversarial(attack="pgd:eps=0.1,steps=3", share=0.5)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> g = torch.Generator().manual_seed(0)
    >>> mixed = strategy.adversarial_batch(net, x, y, g)
    >>> int((mixed != x).flatten(1).any(dim=1).sum()), bool((mixed - x).abs().max() <= 0.1 + 1e-6)
    (2, True)
    >>> context = StepContext(epoch=0, total_epochs=1, generator=g, num_classes=3)
    >>> loss = strategy.loss(net, x, y, context)
    >>> loss.ndim, context.images
    (0, 4)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robustlab.attack import Attack, create_attack
from robustlab.errors import InvalidParameterError, RobustlabError
from robustlab.spec import format_spec, parse_spec
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy

_EXAMPLES = "'pgd:eps=0.3,steps=40' or {name: fgsm, params: {eps: 0.1, random_start: true}}"


def _attack_from(attack: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The attack name and parameters of a spec string or a ``{name, params}`` mapping."""
    if isinstance(attack, str):
        return parse_spec(attack)
    if isinstance(attack, Mapping):
        extra = sorted(set(attack) - {"name", "params"})
        name, params = attack.get("name"), attack.get("params", {})
        if extra or not isinstance(name, str) or not isinstance(params, Mapping):
            raise InvalidParameterError(
                f"adversarial: attack must be a mapping with keys name (a string) and params "
                f"(a mapping), got {dict(attack)!r}; e.g. {_EXAMPLES}"
            )
        return name, dict(params)
    raise InvalidParameterError(
        f"adversarial: attack must be a spec string or a {{name, params}} mapping, got "
        f"{attack!r}; e.g. {_EXAMPLES}"
    )


@STRATEGIES.register("adversarial", tags=("madry2018", "huang2021", "adversarial"))
class Adversarial(Strategy):
    """Adversarial training: cross-entropy on a batch whose ``share`` is attacked.

    Args:
        attack: a registered attack (:data:`robustlab.attack.ATTACKS`) as a spec string
            (``"pgd:eps=0.3,steps=40"``) or a mapping ``{name, params}``, run against the
            model being trained.
        share: fraction of each batch replaced by its adversarial examples, in ``[0, 1]``.

    Raises:
        InvalidParameterError: for an unknown attack or attack parameter (the message lists
            the valid ones), a malformed attack, or a share outside ``[0, 1]``.
    """

    def __init__(
        self, attack: str | dict[str, Any] = "pgd:eps=0.3,steps=40", share: float = 1.0
    ) -> None:
        name, params = _attack_from(attack)
        try:
            self.attack: Attack = create_attack(name, **params)
        except RobustlabError as err:
            raise InvalidParameterError(
                f"adversarial: attack {attack!r} cannot be built: {err}; e.g. {_EXAMPLES}"
            ) from err
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not 0.0 <= share <= 1.0  # also rejects NaN
        ):
            raise InvalidParameterError(
                f"adversarial: share must be a number in [0, 1] (the fraction of each batch "
                f"that is attacked), got {share!r}"
            )
        self.attack_spec = format_spec(name, params)
        self.share = float(share)

    def describe(self) -> str:
        """``adversarial(<attack spec>, share=<share>)``."""
        return f"adversarial({self.attack_spec}, share={self.share:g})"

    def _chosen(
        self, count: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor | None:
        """Indices (on ``device``) of the images to attack, or None for all of them."""
        if self.share >= 1.0:
            return None
        k = math.floor(self.share * count + 0.5)
        order = torch.randperm(count, generator=generator, device=generator.device)
        return order[:k].sort().values.to(device)

    def adversarial_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """``x`` with ``share`` of its images replaced by adversarial examples (detached).

        The attack runs with ``model`` in eval mode and its parameters frozen; afterwards
        every parameter's ``requires_grad`` is as before and the model is in training mode
        (:meth:`train_mode`).

        Args:
            model: the model being trained (the attack's target).
            x: images ``(B, C, H, W)`` in ``[0, 1]``.
            y: labels ``(B,)``.
            generator: draws the attacked images and the attack's randomness.
        """
        chosen = self._chosen(len(x), generator, x.device)
        if chosen is not None and len(chosen) == 0:
            return x
        target, labels = (x, y) if chosen is None else (x[chosen], y[chosen])
        # Attack.run restores the flags too; this also covers an attack that overrides run.
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            model.eval()
            adversarial = self.attack.run(model, target, labels, generator).adversarial.detach()
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            self.train_mode(model)
        if chosen is None:
            return adversarial
        mixed = x.detach().clone()
        mixed[chosen] = adversarial
        return mixed

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Cross-entropy, in training mode, of the batch with ``share`` of it adversarial."""
        mixed = self.adversarial_batch(model, x, y, context.generator)
        return cross_entropy(model, mixed, y, context)
