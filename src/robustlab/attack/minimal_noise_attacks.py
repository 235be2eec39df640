"""aghdam2016's minimal-noise searches as minimum-norm attacks: ``ga`` and ``szegedy``.

:func:`robustlab.attack.minimal_noise.minimal_noise_search` finds, per image, the smallest
additive noise that flips the prediction, by aghdam2016's genetic algorithm or Szegedy et
al.'s line search. Registered here as minimum-norm attacks (L2, like FMN), they run in a
study's ``attacks:`` section beside ``fmn``, ``pgd`` and ``autoattack``, with the same
robust-accuracy-vs-eps curve, the same table and the same per-sample worst case; with ``eps``
set they are bounded attacks (a noise larger than ``eps`` is dropped).

The study's ``minimal_noise:`` section keeps the paper's own report (noise images, PSNR per
class, the GA-vs-Szegedy table) and accepts every minimum-norm attack as a method too.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.attack.base import create_attack
    >>> from robustlab.seeding import make_generator
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
    ...     _ = net[1].bias.copy_(torch.tensor([-0.75, 0.75]))
    >>> x, y = torch.full((2, 1, 2, 2), 0.25), torch.tensor([0, 0])  # class 0 while sum > 0.75
    >>> adv = create_attack("szegedy")(net, x, y)
    >>> (net(adv).argmax(dim=1) != y).tolist()
    [True, True]
    >>> size = (adv - x).flatten(1).norm(dim=1)  # the exact minimum is 0.125
    >>> bool(((size >= 0.125) & (size < 0.2)).all())
    True
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.attack.base import ATTACKS, AttackResult
from robustlab.attack.minimal_noise import (
    GeneticParams,
    SzegedyParams,
    minimal_noise_search,
)
from robustlab.attack.minimum_norm import MinimumNormAttack, check_optional_eps
from robustlab.errors import InvalidParameterError


def _result(x: torch.Tensor, noise: torch.Tensor, success: torch.Tensor) -> AttackResult:
    adversarial = torch.where(success.view(-1, 1, 1, 1), (x + noise).clamp(0, 1), x)
    none = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    return AttackResult(adversarial, none, none.clone())


def _params(kind: type[GeneticParams] | type[SzegedyParams], **values: object) -> object:
    try:
        return kind(**values)  # type: ignore[arg-type]
    except TypeError as err:  # a value of the wrong type reaching a comparison
        raise InvalidParameterError(f"bad {kind.__name__} parameter: {err}") from err


@ATTACKS.register("ga", severity="eps", tags=("black-box", "score-based", "minimum-norm"))
class GeneticMinimalNoise(MinimumNormAttack):
    """aghdam2016's genetic search for the smallest noise that flips a prediction (L2).

    Args:
        eps: None (the smallest noise, unbounded) or a budget: larger noise is dropped.
        lam: weight of the noise's L2 norm in the objective.
        beta: multiplier of the true class's score while still classified correctly.
        scores: ``softmax`` (the paper) or ``logits``.
        population: chromosomes per image.
        generations: most generations.
        patience: generations without improvement before an image stops.
    """

    norm = "l2"

    def __init__(
        self,
        eps: float | None = None,
        lam: float = 1.0,
        beta: float = 100.0,
        scores: str = "softmax",
        population: int = 30,
        generations: int = 300,
        patience: int = 50,
    ) -> None:
        self.eps = check_optional_eps(eps)
        self.lam, self.beta, self.scores = lam, beta, scores
        self.population, self.generations, self.patience = population, generations, patience
        self._ga = _params(
            GeneticParams, lam=lam, beta=beta, scores=scores, population=population,
            generations=generations, patience=patience,
        )  # fmt: skip

    @property
    def random(self) -> bool:
        """The genetic algorithm draws its population from the generator."""
        return True

    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """The genetic search on every image at once."""
        found = minimal_noise_search(
            model, x.contiguous(), y, method="ga", generator=generator,
            ga=self._ga,  # type: ignore[arg-type]
        )  # fmt: skip
        noise = torch.as_tensor(found.noise, device=x.device)
        return _result(x, noise, torch.as_tensor(found.success, device=x.device))


@ATTACKS.register("szegedy", severity="eps", tags=("gradient", "minimum-norm"))
class SzegedyMinimalNoise(MinimumNormAttack):
    """Szegedy et al.'s ``lambda ||r||_2 + loss(x + r)`` by projected Adam and a line search.

    Args:
        eps: None (the smallest noise, unbounded) or a budget: larger noise is dropped.
        lam: the first lambda of the line search.
        target: ``runner_up`` (cross-entropy towards the clean runner-up) or ``true``.
        steps: Adam steps per lambda.
        rounds: lambdas tried per image.
        lr: Adam's step size.
    """

    norm = "l2"

    def __init__(
        self,
        eps: float | None = None,
        lam: float = 0.1,
        target: str = "runner_up",
        steps: int = 50,
        rounds: int = 5,
        lr: float = 0.01,
    ) -> None:
        self.eps = check_optional_eps(eps)
        self.lam, self.target, self.steps, self.rounds, self.lr = lam, target, steps, rounds, lr
        self._szegedy = _params(
            SzegedyParams, lam=lam, target=target, steps=steps, rounds=rounds, lr=lr
        )

    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """The line search on every image at once (no random draws)."""
        with torch.enable_grad():
            found = minimal_noise_search(
                model, x.contiguous(), y, method="szegedy",
                szegedy=self._szegedy,  # type: ignore[arg-type]
            )  # fmt: skip
        noise = torch.as_tensor(found.noise, device=x.device)
        return _result(x, noise, torch.as_tensor(found.success, device=x.device))
