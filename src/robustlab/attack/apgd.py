"""Auto-PGD (APGD, APGD-T): PGD with a step size that adapts itself, L-inf and L2, batched.

Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML), Algorithm 1, and their reference implementation
(``autoattack/autopgd_base.py``). APGD needs no step size: it starts at ``eta = 2 * eps`` and
halves it, per sample, when progress stalls.

**Iterates.** From ``x(0)`` (a random point of the ``eps`` ball, or the image), the first step
is plain projected gradient ascent, ``x(1) = P(x(0) + eta * s(x(0)))``; every later one adds
momentum::

    z(k+1) = P(x(k) + eta * s(x(k)))
    x(k+1) = P(x(k) + alpha * (z(k+1) - x(k)) + (1 - alpha) * (x(k) - x(k-1)))

where ``s`` is the sign of the loss gradient (L-inf) or the gradient scaled to unit L2 norm
(L2), ``P`` the projection onto the ``eps`` ball's intersection with the box ``[0, 1]`` and
``alpha = momentum`` (0.75). ``steps`` steps make ``steps + 1`` iterates, each costing one
forward and backward pass, whose logits also give the iterate's loss and prediction.

**Step size.** At the checkpoints ``w_j = ceil(p_j * steps)``, ``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (:func:`apgd_checkpoints`; for 100 steps:
22, 41, 57, 70, 80, 87, 93, 99), once ``x(w_j)`` is known, a sample's step size is halved
when

1. fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint raised the
   loss (``f(x(i+1)) > f(x(i))`` for ``w_{j-1} <= i < w_j``), or
2. its step size was not halved at the last checkpoint and its best loss has not improved
   since then;

that sample then continues from its best point so far, ``x(w_j) <- x_max``, and its gradient
there.

**Losses.** The cross-entropy (``loss="ce"``), the Difference of Logits Ratio (``"dlr"``,
:func:`dlr_loss`), invariant to shifts and rescalings of the logits, or, with ``targets=k``
(APGD-T), the targeted DLR (:func:`dlr_targeted_loss`) towards each of the ``k`` classes the
model rates most likely after the true one (on the clean image), one run per target: AutoAttack
runs 9. Every loss goes through :func:`robustlab.attack.base.loss_gradient`, so EOT wrappers
(:class:`robustlab.attack.adaptive.EOT`) average its gradient over their draws.

**Result.** As AutoAttack's reference does for robust accuracy, a sample that some iterate
fools (logits' argmax ``!= y``) gets that iterate (the reference's ``x_best_adv``: the last such
iterate of the run); a sample never fooled gets its highest-loss point ``x_max`` (the reference
returns the clean image there; ``x_max`` is what a transfer or worst-case analysis wants).
Restarts and targets run, in the reference's order (targets outer, restarts inner), only on
the samples no earlier run fooled, so per sample the first run that fools it is kept; a sample
never fooled gets the last run's ``x_max``. The first run attacks every sample (the reference
skips those misclassified already and returns them unchanged). The zero / vanishing gradient
flags come from the first gradient of the run whose example is returned.

**Where this follows the paper rather than the reference.** The checkpoints are the paper's
(the reference truncates ``0.22 * steps``, ``0.06 * steps`` and ``0.03 * steps`` to integers,
which agrees for 100 steps but not, e.g., for 10: 2, 3, 4, ... instead of 3, 5, 6, ...);
condition 1 counts ``f(x(1)) > f(x(0))`` at the first checkpoint (the reference compares
``f(x(1))`` with an unset 0) and uses ``<`` (the reference ``<=``, which differs only when
``rho * (w_j - w_{j-1})`` is an integer, at 57 for 100 steps); condition 2 can hold at the
first checkpoint (``eta`` was not halved at ``w_0 = 0``; the reference starts as if it had
been). The L2 step is the gradient scaled by its largest entry, then to unit norm, so that a
vanishing gradient does not underflow (as :mod:`robustlab.attack.gradient`). Through EOT, the
loss and the prediction of an iterate are those of the mean logits over the draws (the
reference takes the last draw's).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.seeding import make_generator
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> adv = APGD(eps=0.1, steps=10, loss="dlr")(net, x, y, make_generator(0))
    >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), bool(adv.min() >= 0), bool(adv.max() <= 1)
    (True, True, True)
    >>> apgd_checkpoints(100)
    [0, 22, 41, 57, 70, 80, 87, 93, 99]
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.attack.base import (
    ATTACKS,
    Attack,
    AttackResult,
    LossFunction,
    check_eps,
    check_int,
    check_norm,
    check_output,
    cross_entropy_loss,
    loss_gradient,
    vanishing_gradient,
)
from robustlab.errors import InvalidParameterError

LOSSES: tuple[str, ...] = ("ce", "dlr")

# Keeps a zero perturbation or logit gap from dividing by zero (the reference's constant).
_TINY = 1e-12


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidParameterError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step size (the paper's ``W``), from 0.

    ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, for every ``p_j <= 1``, computed in
    exact hundredths (in floating point the recurrence gives
    ``p_3 = 0.5700000000000001``, whose ceiling for 100 steps is 58) and without repeats
    (short runs give equal ceilings). ``w_0 = 0`` only starts the first interval, and a
    checkpoint at ``steps`` itself has nothing left to affect.

    Args:
        steps: the number of iterations, ``>= 1``.

    Example:
        >>> apgd_checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
        >>> apgd_checkpoints(10)
        [0, 3, 5, 6, 7, 8, 9, 10]
    """
    steps = check_int("steps", steps, 1)
    points = [0]
    previous, current = 0, 22  # p_{j-1}, p_j in hundredths
    while current <= 100:
        checkpoint = -(-current * steps // 100)  # exact ceil(current * steps / 100)
        if checkpoint != points[-1]:
            points.append(checkpoint)
        previous, current = current, current + max(current - previous - 3, 6)
    return points


def _check_classes(logits: torch.Tensor, minimum: int, name: str) -> None:
    classes = logits.shape[1] if logits.ndim == 2 else 0
    if classes < minimum:
        raise InvalidParameterError(
            f"the {name} loss needs a model with at least {minimum} classes (it is normalised "
            f"by the spread of the {minimum} largest logits); this model has {classes}: use "
            "loss=ce"
        )


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample Difference of Logits Ratio loss, to be maximised (Croce & Hein 2020, Eq. 2).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi1 >= z_pi2 >= ...`` the
    sorted logits: the margin of the true class, negated, in units of the spread of the top
    logits, so it does not change when the logits are shifted or rescaled. Positive once the
    sample is misclassified.

    Args:
        logits: ``(N, K)`` with ``K >= 3``.
        y: true labels ``(N,)``.

    Raises:
        InvalidParameterError: for fewer than 3 classes.

    Example:
        >>> import torch
        >>> dlr_loss(torch.tensor([[1.0, 4.0, 2.0, 3.0]]), torch.tensor([0]))  # 3 / 2
        tensor([1.5000])
    """
    _check_classes(logits, 3, "DLR")
    top, index = logits.topk(3, dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    best_other = torch.where(index[:, 0] == y, top[:, 1], top[:, 0])
    return (best_other - true) / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR loss towards ``target``, to be maximised (APGD-T).

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` with ``z_pi1 >= z_pi2 >= ...`` the
    sorted logits. Use it through :func:`functools.partial` as a
    :data:`robustlab.attack.base.LossFunction`.

    Args:
        logits: ``(N, K)`` with ``K >= 4``.
        y: true labels ``(N,)``.
        target: target classes ``(N,)``.

    Raises:
        InvalidParameterError: for fewer than 4 classes.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
        >>> dlr_targeted_loss(logits, torch.tensor([1]), torch.tensor([3]))  # -1 / 2.5
        tensor([-0.4000])
    """
    _check_classes(logits, 4, "targeted DLR")
    top = logits.topk(4, dim=1).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    aim = logits.gather(1, target[:, None]).squeeze(1)
    return (aim - true) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


@dataclass
class APGDRun:
    """One run of APGD (Algorithm 1) on a batch, with its trace.

    Attributes:
        adversarial: per sample, the last iterate the model misclassified, else ``x_max``.
        x_max: the highest-loss iterate per sample.
        loss_max: its loss ``(N,)``.
        fooled: ``(N,)`` bool, some iterate was misclassified.
        zero_gradient: ``(N,)`` bool, the gradient at ``x(0)`` was exactly zero.
        vanishing_gradient: ``(N,)`` bool, it vanished
            (:func:`robustlab.attack.base.vanishing_gradient`).
        losses: ``(steps + 1, N)``, the loss ``f(x(k))`` of every iterate.
        step_sizes: ``(steps, N)``, the step size ``eta`` of the step from ``x(k)`` to
            ``x(k+1)``; it halves from row ``w_j`` on for the samples halved at checkpoint
            ``w_j`` (what the tests check the schedule with).
    """

    adversarial: torch.Tensor
    x_max: torch.Tensor
    loss_max: torch.Tensor
    fooled: torch.Tensor
    zero_gradient: torch.Tensor
    vanishing_gradient: torch.Tensor
    losses: torch.Tensor
    step_sizes: torch.Tensor


def apgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    loss: LossFunction,
    rho: float = 0.75,
    momentum: float = 0.75,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> APGDRun:
    """One APGD run (no restarts), the engine of :class:`APGD`; also returns its trace.

    ``model`` must already be in attack mode (:func:`robustlab.attack.base.attack_mode`) and
    the batch validated; ``norm`` is ``linf`` or ``l2``. See the module docstring for the
    algorithm.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> run = apgd_run(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), eps=0.125,
        ...                norm="linf", steps=5, loss=dlr_loss, random_start=False)
        >>> tuple(run.losses.shape), tuple(run.step_sizes.shape), run.step_sizes[0].tolist()
        ((6, 2), (5, 2), [0.25, 0.25])
    """
    n = len(x)
    view = (n,) + (1,) * (x.ndim - 1)
    dims = tuple(range(1, x.ndim))
    project: Callable[[torch.Tensor], torch.Tensor]
    direction: Callable[[torch.Tensor], torch.Tensor]
    if norm == "linf":
        low = (x - eps).clamp_(min=0.0)
        high = (x + eps).clamp_(max=1.0)

        def project(point: torch.Tensor) -> torch.Tensor:
            torch.maximum(point, low, out=point)
            return torch.minimum(point, high, out=point)

        def direction(grad: torch.Tensor) -> torch.Tensor:
            return grad.sign_()

    else:

        def project(point: torch.Tensor) -> torch.Tensor:
            delta = point.sub_(x)
            length = torch.linalg.vector_norm(delta, dim=dims, keepdim=True)
            # Clamping to [0, 1] moves no coordinate away from x: the point stays in the ball.
            return delta.mul_((eps / (length + _TINY)).clamp_(max=1.0)).add_(x).clamp_(0.0, 1.0)

        def direction(grad: torch.Tensor) -> torch.Tensor:
            # Scale by the largest entry first so that a vanishing gradient does not underflow
            # in its squares; a nonzero gradient then has norm >= 1, a zero one stays zero.
            largest = grad.abs().amax(dim=dims, keepdim=True)
            grad /= largest.masked_fill_(largest == 0, 1.0)
            return grad.div_(torch.linalg.vector_norm(grad, dim=dims, keepdim=True).clamp_(1.0))

    adv = x.clone()
    if random_start:
        # The reference's starts, drawn in the logical order: eps * t / ||t|| with t uniform in
        # [-1, 1] for L-inf (a point on a face of the cube), Gaussian for L2 (on the sphere).
        if norm == "linf":
            t = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            t.mul_(2.0).sub_(1.0)
            t /= t.abs().amax(dim=dims, keepdim=True) + _TINY
        else:
            t = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
            t /= torch.linalg.vector_norm(t, dim=dims, keepdim=True) + _TINY
        adv = project(adv.add_(t, alpha=eps))

    grad, logits = loss_gradient(model, adv, y, loss)
    zero_gradient = grad.abs().flatten(1).amax(dim=1) == 0
    vanishing = vanishing_gradient(grad)
    value = loss(logits, y).detach()
    losses = value.new_empty((steps + 1, n))
    losses[0] = value
    step_sizes = value.new_empty((steps, n))
    fooled = logits.argmax(dim=1) != y
    best_adv = adv.clone()
    x_max, loss_max, grad_max = adv.clone(), value.clone(), grad.clone()
    eta = torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device)
    points = apgd_checkpoints(steps)
    last_checkpoint = {w: v for v, w in itertools.pairwise(points) if w < steps}
    halved_last = torch.zeros(n, dtype=torch.bool, device=x.device)  # eta not halved at w_0
    loss_max_last = loss_max.clone()
    previous = adv
    for k in range(steps):
        step_sizes[k] = eta
        # z(k+1) in the gradient's buffer: the gradient is not needed once its step is taken.
        new = project(direction(grad).mul_(eta.view(view)).add_(adv))
        if k > 0:
            # x(k) + alpha (z - x(k)) + (1 - alpha) (x(k) - x(k-1)), in place.
            new.sub_(adv).mul_(momentum).add_(adv)
            new.add_(previous.neg_().add_(adv), alpha=1.0 - momentum)
            project(new)
        previous, adv = adv, new
        grad, logits = loss_gradient(model, adv, y, loss)
        value = loss(logits, y).detach()
        losses[k + 1] = value
        wrong = logits.argmax(dim=1) != y
        best_adv[wrong] = adv[wrong]
        fooled |= wrong
        better = value > loss_max
        x_max[better] = adv[better]
        grad_max[better] = grad[better]
        loss_max = torch.where(better, value, loss_max)
        checkpoint = k + 1
        if checkpoint in last_checkpoint:
            start = last_checkpoint[checkpoint]
            rises = (losses[start + 1 : checkpoint + 1] > losses[start:checkpoint]).sum(dim=0)
            stalled = rises < rho * (checkpoint - start)  # condition 1
            stalled |= ~halved_last & (loss_max <= loss_max_last)  # condition 2
            eta = torch.where(stalled, eta / 2, eta)
            adv[stalled] = x_max[stalled]
            grad[stalled] = grad_max[stalled]
            halved_last, loss_max_last = stalled, loss_max.clone()
    best_adv[~fooled] = x_max[~fooled]
    return APGDRun(best_adv, x_max, loss_max, fooled, zero_gradient, vanishing, losses, step_sizes)


@ATTACKS.register("apgd", severity="eps", tags=("gradient", "iterative"))
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): PGD with momentum and a self-adapting step size.

    APGD-CE (``loss="ce"``), APGD-DLR (``loss="dlr"``) or, with ``targets >= 1``, APGD-T on the
    targeted DLR loss (AutoAttack's standard version runs APGD-CE then APGD-T with
    ``targets=9``). See the module docstring for the algorithm and the result.

    Args:
        eps: perturbation budget in the ``[0, 1]`` pixel scale, ``>= 0``.
        norm: ``linf`` (sign steps) or ``l2`` (normalised gradient steps).
        steps: iterations per run, ``>= 1`` (100, as AutoAttack).
        loss: ``ce`` (cross-entropy) or ``dlr`` (Difference of Logits Ratio; 3 classes or
            more). ``targets >= 1`` needs ``dlr``.
        targets: 0 for an untargeted attack; ``k >= 1`` for APGD-T: one run of the targeted
            DLR loss (4 classes or more) towards each of the ``k`` classes the model rates
            most likely on the clean image after the true one, most likely first (at most
            ``classes - 1`` of them exist, so a larger ``k`` means all).
        restarts: runs from independent random starts, ``>= 1``, per target; more than one
            needs ``random_start``.
        rho: condition 1's threshold on the fraction of steps that raised the loss, in
            ``[0, 1]``.
        momentum: ``alpha``, the weight of the new gradient step against the previous
            update, in ``[0, 1]`` (1: no momentum).
        channels_last: run convolutions in channels-last order (faster on CPU; the numbers
            can differ from the default layout in the last bits).
        random_start: start at the reference's random point of the ``eps`` ball (drawn from
            the generator) instead of at the image.
    """

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        steps: int = 100,
        loss: str = "ce",
        targets: int = 0,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        channels_last: bool = True,
        random_start: bool = True,
    ) -> None:
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps, 1)
        name = str(loss).lower()
        if name not in LOSSES:
            raise InvalidParameterError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss = name
        self.targets = check_int("targets", targets, 0)
        if self.targets and self.loss != "dlr":
            raise InvalidParameterError(
                f"targets={self.targets} runs APGD-T, which attacks the targeted DLR loss: "
                "set loss=dlr (or targets=0 for an untargeted attack on the cross-entropy)"
            )
        self.restarts = check_int("restarts", restarts, 1)
        self.rho = _check_fraction("rho", rho)
        self.momentum = _check_fraction("momentum", momentum)
        self.channels_last = bool(channels_last)
        self.random_start = bool(random_start)
        if self.restarts > 1 and not self.random_start:
            raise InvalidParameterError(
                f"restarts={self.restarts} needs random_start=true: without a random start "
                "every restart begins at the image and repeats the first one"
            )

    @property
    def random(self) -> bool:
        """A random start draws from the generator (nothing to draw when ``eps`` is 0)."""
        return self.random_start and self.eps > 0

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """Every run (targets x restarts) in turn, each on the samples no earlier run fooled."""
        zero = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if self.eps == 0.0:
            return AttackResult(x.clone(), zero, zero.clone())
        ranked: torch.Tensor | None = None
        runs: list[int | None] = [None] * self.restarts
        if self.targets:
            with torch.no_grad():
                clean = check_output(model(x), y).detach()
            _check_classes(clean, 4, "targeted DLR")
            # The other classes, most likely first: the true one sorts last.
            others = clean.scatter(1, y[:, None], -math.inf)
            ranked = others.sort(dim=1, descending=True, stable=True).indices
            count = min(self.targets, clean.shape[1] - 1)
            runs = [rank for rank in range(count) for _ in range(self.restarts)]
        result: AttackResult | None = None
        standing = torch.arange(len(x), device=x.device)
        for rank in runs:
            if len(standing) == 0:
                break
            xs, ys = (x, y) if result is None else (x[standing], y[standing])
            objective: LossFunction = dlr_loss if self.loss == "dlr" else cross_entropy_loss
            if rank is not None and ranked is not None:
                objective = functools.partial(dlr_targeted_loss, target=ranked[standing, rank])
            run = apgd_run(
                model, xs, ys, eps=self.eps, norm=self.norm, steps=self.steps, loss=objective,
                rho=self.rho, momentum=self.momentum, random_start=self.random_start,
                generator=generator,
            )  # fmt: skip
            if result is None:
                result = AttackResult(run.adversarial, run.zero_gradient, run.vanishing_gradient)
            else:
                result.adversarial[standing] = run.adversarial
                result.zero_gradient[standing] = run.zero_gradient
                result.vanishing_gradient[standing] = run.vanishing_gradient
            standing = standing[~run.fooled]
        assert result is not None  # at least one run, on the whole batch
        return result
