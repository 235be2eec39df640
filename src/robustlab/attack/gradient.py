"""Gradient attacks: FGSM and projected gradient descent (PGD), L-inf and L2, batched.

**PGD** (Madry et al. 2018) starts at a random point of the ``eps`` ball around each image (or
at the image) and takes ``steps`` steps of size ``step_size`` up the cross-entropy loss: the
gradient's sign for L-inf, the gradient scaled to unit L2 norm for L2. After every step the
iterate is projected back onto the intersection of the ``eps`` ball and the box ``[0, 1]``;
the last iterate is the adversarial example. **FGSM** (Goodfellow et al. 2015) is one step of
size ``eps`` from the image itself; for L2 it is the fast gradient method (one normalised
step). With ``random_start`` it is Wong et al.'s (2020, "Fast is better than free") FGSM-RS: one
step from a uniformly random point of the ``eps`` ball, of ``step_size`` (they use ``1.25 *
eps``), projected back onto the ball and the box.

Defaults: 40 steps and ``step_size = 2.5 * eps / steps``, the choice of Madry et al. (a total
path of 2.5 ``eps``, so that a step can leave the ball's boundary and come back). Foolbox's
``LinfPGD``, which huang2021 used, takes 40 steps of ``eps / 30`` (``rel_step_size=1/30``).

**Restarts** (Madry et al. 2018, Section 5 and their MNIST challenge's "100-step PGD with 50
random restarts"): ``PGD(restarts=R)`` runs the attack from up to ``R`` independent random
starts and keeps, per sample, the first adversarial example that the attacked model
misclassifies (``argmax != y``), or the last restart's example for a sample never fooled. The
first restart is exactly the single-start attack (same draws, same result); each later one
attacks only the samples still standing, drawing their starts from the same generator in batch
order, and none runs once every sample is fooled. The zero / vanishing gradient flags of a
sample are those of the run its returned example comes from.

For L-inf the projection onto the ball's intersection with the box is one elementwise clamp
between ``max(x - eps, 0)`` and ``min(x + eps, 1)``, computed once. The update runs in place
(``add_`` of ``sign_``, then ``maximum`` / ``minimum`` into the iterate), the gradient is taken
with respect to the input only (parameters frozen, :func:`robustlab.attack.base.attack_mode`),
and convolution weights are switched to channels-last order for the run, which is what makes
PGD about twice as fast as a plain PyTorch loop on CPU (``benchmarks/bench_pgd.py``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.seeding import make_generator
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> adv = PGD(eps=0.5, norm="l2", steps=10)(net, x, y, make_generator(0))
    >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())
    True
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.attack.base import (
    ATTACKS,
    Attack,
    AttackResult,
    check_eps,
    check_int,
    check_norm,
    check_positive,
    loss_gradient,
    vanishing_gradient,
)
from robustlab.errors import InvalidParameterError

# Keeps a zero perturbation from dividing by zero in the L2 projection.
_TINY = 1e-12


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    norm: torch.Tensor = torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), keepdim=True)
    return norm


def _check_restarts(restarts: int, random_start: bool) -> int:
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise InvalidParameterError(f"restarts must be an integer >= 1, got {restarts!r}")
    if restarts > 1 and not random_start:
        raise InvalidParameterError(
            f"restarts={restarts} needs random_start=true: without a random start every "
            "restart begins at the image and repeats the first one"
        )
    return restarts


@torch.no_grad()
def _fooled(model: nn.Module, adversarial: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: the model misclassifies the adversarial example."""
    fooled: torch.Tensor = model(adversarial).argmax(dim=1) != y
    return fooled


def _check_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    return check_positive(name, value)


def gradient_ascent(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> AttackResult:
    """Projected gradient ascent on the cross-entropy in the ``eps`` ball and ``[0, 1]``.

    The shared engine of :class:`FGSM` and :class:`PGD`; ``model`` must already be in attack
    mode (:func:`robustlab.attack.base.attack_mode`) and the batch validated.
    """
    zero_gradient = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    vanishing = zero_gradient.clone()
    if eps == 0.0:
        return AttackResult(x.clone(), zero_gradient, vanishing)
    adv = x.clone()
    if norm == "linf":
        low = (x - eps).clamp_(min=0.0)
        high = (x + eps).clamp_(max=1.0)
        if random_start:
            # Drawn in the logical (contiguous) order, so the draws do not depend on the layout.
            noise = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            adv.add_(noise.uniform_(-eps, eps, generator=generator))
            torch.maximum(adv, low, out=adv)
            torch.minimum(adv, high, out=adv)
        for step in range(steps):
            grad, _ = loss_gradient(model, adv, y)
            if step == 0:
                zero_gradient = grad.abs().amax(dim=(1, 2, 3)) == 0
                vanishing = vanishing_gradient(grad)
            adv.add_(grad.sign_(), alpha=step_size)
            torch.maximum(adv, low, out=adv)
            torch.minimum(adv, high, out=adv)
        return AttackResult(adv, zero_gradient, vanishing)

    def project(point: torch.Tensor) -> torch.Tensor:
        delta = point - x
        scale = (eps / (_per_sample_norm(delta) + _TINY)).clamp_(max=1.0)
        # Clamping to [0, 1] moves no coordinate away from x (x is in [0, 1]): still in the ball.
        return (x + delta * scale).clamp_(0.0, 1.0)

    if random_start:
        direction = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        direction /= _per_sample_norm(direction) + _TINY
        # A uniform point of the ball: radius eps * U^(1/d) in d dimensions.
        u = torch.rand((len(x),) + (1,) * (x.ndim - 1), device=x.device, generator=generator)
        adv = project(x + direction * (eps * u.pow(1.0 / x[0].numel())))
    for step in range(steps):
        grad, _ = loss_gradient(model, adv, y)
        largest = grad.abs().amax(dim=tuple(range(1, grad.ndim)), keepdim=True)
        if step == 0:
            zero_gradient = largest.flatten() == 0
            vanishing = vanishing_gradient(grad)
        # Scale by the largest entry first: a tiny (vanishing) gradient would underflow in the
        # squares of its norm. A nonzero gradient then has norm >= 1, a zero one stays zero.
        grad /= largest.masked_fill_(largest == 0, 1.0)
        adv = project(adv + grad * (step_size / _per_sample_norm(grad).clamp_(min=1.0)))
    return AttackResult(adv, zero_gradient, vanishing)


@ATTACKS.register("fgsm", severity="eps", tags=("gradient", "single-step"))
class FGSM(Attack):
    """Fast gradient sign method: one step of size eps along the loss gradient's sign.

    ``x' = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)`` (Goodfellow et al. 2015). With
    ``norm="l2"`` the step is ``eps * g / ||g||_2`` (the fast gradient method).

    With ``random_start=True`` the step starts from a uniformly random point of the ``eps``
    ball (drawn from the generator, clipped to the box) and the result is projected back onto
    the ball and the box: Wong et al.'s (2020) FGSM-RS, which their "fast" adversarial training
    runs with ``step_size = 1.25 * eps`` (``fgsm:eps=0.1,random_start=true,step_size=0.125``).

    Args:
        eps: perturbation budget in the ``[0, 1]`` pixel scale, ``>= 0``.
        norm: ``linf`` or ``l2``.
        channels_last: run convolutions in channels-last order (faster on CPU; the numbers
            can differ from the default layout in the last bits).
        random_start: start at a uniformly random point of the ``eps`` ball instead of at the
            image (False by default: Goodfellow's FGSM).
        step_size: absolute size of the step; ``eps`` when None. An absolute value, so it does
            not follow ``eps`` when a grid varies it.
    """

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        channels_last: bool = True,
        random_start: bool = False,
        step_size: float | None = None,
    ) -> None:
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        self.channels_last = bool(channels_last)
        self.random_start = bool(random_start)
        self.step_size = _check_positive("step_size", step_size)

    @property
    def random(self) -> bool:
        """A random start draws from the generator (nothing to draw when ``eps`` is 0)."""
        return self.random_start and self.eps > 0

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """One step of size ``step_size`` (``eps``) from ``x`` or from a random start."""
        step = self.eps if self.step_size is None else self.step_size
        return gradient_ascent(
            model, x, y, eps=self.eps, norm=self.norm, steps=1, step_size=step,
            random_start=self.random_start, generator=generator if self.random_start else None,
        )  # fmt: skip


@ATTACKS.register("pgd", severity="eps", tags=("gradient", "iterative"))
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2, with a random start.

    Args:
        eps: perturbation budget in the ``[0, 1]`` pixel scale, ``>= 0``.
        norm: ``linf`` (sign steps) or ``l2`` (normalised gradient steps).
        steps: number of gradient steps, ``>= 1`` (40 by default, as Madry et al. and Foolbox).
        step_size: absolute step; default ``2.5 * eps / steps`` (Madry et al.).
        rel_step_size: step as a fraction of ``eps`` instead (Foolbox's ``LinfPGD`` uses
            ``0.01 / 0.3``); give at most one of ``step_size`` and ``rel_step_size``.
        random_start: start at a uniformly random point of the ``eps`` ball (drawn from the
            generator) instead of at the image.
        channels_last: run convolutions in channels-last order (faster on CPU; the numbers
            can differ from the default layout in the last bits).
        restarts: independent random starts, ``>= 1``; per sample the first misclassified
            example is kept, else the last restart's (see the module docstring). More than
            one needs ``random_start``.
    """

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        steps: int = 40,
        step_size: float | None = None,
        rel_step_size: float | None = None,
        random_start: bool = True,
        channels_last: bool = True,
        restarts: int = 1,
    ) -> None:
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps)
        self.step_size = _check_positive("step_size", step_size)
        self.rel_step_size = _check_positive("rel_step_size", rel_step_size)
        if self.step_size is not None and self.rel_step_size is not None:
            raise InvalidParameterError("give at most one of step_size and rel_step_size")
        self.random_start = bool(random_start)
        self.channels_last = bool(channels_last)
        self.restarts = _check_restarts(restarts, self.random_start)

    @property
    def random(self) -> bool:
        """A random start draws from the generator (nothing to draw when ``eps`` is 0)."""
        return self.random_start and self.eps > 0

    @property
    def step(self) -> float:
        """The absolute step size this attack takes."""
        if self.step_size is not None:
            return self.step_size
        if self.rel_step_size is not None:
            return self.rel_step_size * self.eps
        return 2.5 * self.eps / self.steps

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """``steps`` projected steps from a random point of the ball (or from ``x``).

        With ``restarts > 1``, samples the first run does not fool are attacked again from
        fresh random starts, up to ``restarts`` runs in all.
        """
        result = gradient_ascent(
            model, x, y, eps=self.eps, norm=self.norm, steps=self.steps, step_size=self.step,
            random_start=self.random_start, generator=generator,
        )  # fmt: skip
        if self.restarts == 1 or not self.random:
            return result
        standing = (~_fooled(model, result.adversarial, y)).nonzero().flatten()
        for _ in range(self.restarts - 1):
            if len(standing) == 0:
                break
            rerun = gradient_ascent(
                model, x[standing], y[standing], eps=self.eps, norm=self.norm,
                steps=self.steps, step_size=self.step, random_start=True, generator=generator,
            )  # fmt: skip
            result.adversarial[standing] = rerun.adversarial
            result.zero_gradient[standing] = rerun.zero_gradient
            result.vanishing_gradient[standing] = rerun.vanishing_gradient
            standing = standing[~_fooled(model, rerun.adversarial, y[standing])]
        return result
