"""Fast Minimum-Norm attack (FMN), L2 and L-inf: per image, the smallest flipping perturbation.

Pintor, Roli, Brendel and Biggio (NeurIPS 2021, "Fast Minimum-norm Adversarial Attacks through
Adaptive Norm Projection", Algorithm 1). FMN runs projected gradient steps on the logit margin
``m = z_y - max_{j != y} z_j`` (descending it, i.e. ascending ``-m``) inside an ``eps_k`` ball
whose radius it adapts at every step ``k``:

* before the first adversarial point, ``eps_k = ||delta|| + |m| / ||grad m||_*``, the
  linearised distance to the decision boundary (``||.||_*`` is the dual norm: L2 for L2, L1
  for L-inf), but at least ``eps_{k-1} (1 + gamma_k)`` (see below);
* on an adversarial iterate, ``eps_k = min(eps_{k-1} (1 - gamma_k), ||delta_best||)``: shrink;
* on a non-adversarial one after an adversarial was found, ``eps_k = eps_{k-1} (1 + gamma_k)``:
  grow back towards the boundary;

and ``eps_k`` never exceeds the largest perturbation the box ``[0, 1]`` allows. Each step moves
``delta`` by ``alpha_k * grad / ||grad||_2`` (the L2-normalised gradient for both norms, as
the authors' code), projects it onto the ``eps_k`` ball (L2: rescaling, L-inf: clamping) and
clips ``x + delta`` to the box. The step ``alpha_k`` and the factor ``gamma_k`` are
cosine-annealed from ``alpha_init`` / ``gamma_init`` to ``alpha_final`` / ``gamma_final``.
Per image the smallest adversarial iterate seen is kept; an image never flipped comes back
unchanged, and one already misclassified comes back unchanged too (norm 0).

**Departures from the reference code** (``fmn`` in Pintor's repository and its port in
adversarial-library). (1) Before the first adversarial point the radius grows by at least
``1 + gamma_k`` per step. The reference uses the linearised estimate alone, and on a locally
linear model (a ReLU network, a linear one; clipped pixels make it worse) that estimate lands
the iterate *on* the boundary, or converges to it from the inside, without ever crossing:
on a small MNIST MLP the reference rule fooled 0 of 64 digits in 100 L2 steps, this one all
64 (median L2 norm 1.06, below an L2 PGD bisection's 1.08). (2) The iterate the last step
produces is evaluated too (one more forward pass); the reference drops it. (3) An iterate
counts as adversarial only with a margin above rounding (:data:`MARGIN_TOLERANCE`), so that
the returned example stays misclassified when evaluated in another memory layout or batch
(with the bare ``argmax`` of the reference, one image in 64 of a small CNN flipped back).
(4) No warm start from given adversarial points (the reference's ``starting_points`` with a
boundary bisection): the search always starts at ``x``. (5) Untargeted only.

**Use.** One unbounded run (``eps=None``) gives every image's minimal norm and therefore the
whole robust-accuracy-vs-eps curve (:func:`robustlab.attack.minimum_norm.robust_accuracy_curve`
on :func:`~robustlab.attack.minimum_norm.perturbation_norm` of ``adv - x`` and the
misclassification flags). With ``eps`` set, FMN is a bounded attack (``fmn:norm=linf,eps=0.1``)
that keeps only perturbations within ``eps`` (:class:`MinimumNormAttack`). The search is
deterministic (no generator needed); the lower-level :func:`fmn_search` can record the best
norm after every step (``trace``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.attack.minimum_norm import perturbation_norm, robust_accuracy_curve
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x = 0.25 + 0.5 * torch.rand(8, 1, 4, 4)
    >>> y = net(x).argmax(dim=1)  # correctly classified by construction
    >>> adv = FMN(norm="l2", steps=50)(net, x, y)
    >>> fooled = net(adv).argmax(dim=1) != y
    >>> bool(fooled.all())
    True
    >>> distance = perturbation_norm(adv - x, "l2")
    >>> robust_accuracy_curve(distance.numpy(), fooled.numpy(), [0.0, 10.0]).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustlab.attack.base import (
    ATTACKS,
    AttackResult,
    check_int,
    check_norm,
    check_output,
    check_positive,
    loss_gradient,
    vanishing_gradient,
)
from robustlab.attack.minimum_norm import (
    MinimumNormAttack,
    check_optional_eps,
    perturbation_norm,
)
from robustlab.errors import InvalidParameterError

# Keeps a zero gradient (or perturbation) from dividing by zero, as the reference code.
_TINY = 1e-12

#: An iterate counts as adversarial when its margin ``max_{j != y} z_j - z_y`` exceeds this
#: fraction of ``max(1, max_j |z_j|)``. FMN ends within rounding of the decision boundary,
#: where evaluating the same image in another memory layout (channels-last convolutions) or
#: in another batch can flip the prediction back; the clean image itself (step 0) counts as
#: adversarial whenever it is misclassified.
MARGIN_TOLERANCE = 1e-5


def negative_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y`` per sample: FMN's objective, maximised (positive: fooled).

    Example:
        >>> import torch
        >>> negative_margin(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0])).tolist()
        [-1.0]
    """
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - true


def _check_gamma(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise InvalidParameterError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def fmn_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "l2",
    steps: int = 100,
    alpha_init: float = 1.0,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    trace: list[torch.Tensor] | None = None,
) -> AttackResult:
    """FMN's unbounded search: per image, the smallest adversarial iterate found.

    The engine of :class:`FMN`; ``model`` must already be in attack mode
    (:func:`robustlab.attack.base.attack_mode`) and the batch validated (:meth:`Attack.run`
    does both). Gradients come from :func:`robustlab.attack.base.loss_gradient`, so EOT
    estimators are honoured.

    Args:
        model: the classifier, returning ``(N, classes)`` logits.
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        norm: ``l2`` or ``linf``.
        steps: gradient steps, ``>= 1``.
        alpha_init: initial step size (of the L2-normalised gradient), ``> 0``.
        alpha_final: final step size after cosine annealing; ``alpha_init / 100`` when None.
        gamma_init: initial factor of the ``eps_k`` updates, in ``[0, 1)``.
        gamma_final: final factor after cosine annealing, in ``[0, 1)``.
        trace: when a list, the best norm per image ``(N,)`` (``inf`` where nothing
            adversarial has been found yet) is appended after evaluating each iterate:
            ``steps + 1`` tensors, the last one for the iterate the last step produced.

    Returns:
        The smallest adversarial example found per image (the image itself where none), with
        the zero / vanishing flags of the margin's gradient at ``x``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = 0.4 + 0.2 * torch.rand(3, 1, 2, 2)
        >>> y = net(x).argmax(dim=1)
        >>> trace: list[torch.Tensor] = []
        >>> result = fmn_search(net, x, y, norm="linf", steps=20, trace=trace)
        >>> len(trace), bool((net(result.adversarial).argmax(dim=1) != y).all())
        (21, True)
    """
    norm = check_norm(norm)
    steps = check_int("steps", steps)
    alpha_init = check_positive("alpha_init", alpha_init)
    alpha_last = (
        alpha_init / 100 if alpha_final is None else check_positive("alpha_final", alpha_final)
    )
    gamma_init = _check_gamma("gamma_init", gamma_init)
    gamma_final = _check_gamma("gamma_final", gamma_final)

    n = len(x)
    dims = tuple(range(1, x.ndim))
    view = (n,) + (1,) * (x.ndim - 1)
    dual = 2.0 if norm == "l2" else 1.0
    # The largest perturbation the box allows: eps_k never needs to exceed it.
    worst = perturbation_norm(torch.maximum(x, 1 - x), norm)
    best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    best_adv = x.clone()
    eps = torch.zeros_like(best_norm)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    zero_gradient = found.clone()
    vanishing = found.clone()

    def track(adv: torch.Tensor, logits: torch.Tensor, clean: bool) -> tuple[torch.Tensor, ...]:
        """Keep the smaller adversarial iterates; returns ``(is_adv, ||adv - x||, margin)``."""
        size = perturbation_norm(adv - x, norm)
        margin = negative_margin(logits, y)
        if clean:
            is_adv = logits.argmax(dim=1) != y
        else:
            scale = logits.abs().amax(dim=1).clamp_(min=1.0)
            is_adv = margin > MARGIN_TOLERANCE * scale
        better = is_adv & (size < best_norm)
        best_norm[better] = size[better]
        best_adv[better] = adv[better]
        found.logical_or_(is_adv)
        if trace is not None:
            trace.append(best_norm.clone())
        return is_adv, size, margin

    adv = x.clone()
    for k in range(steps):
        cosine = (1 + math.cos(math.pi * k / steps)) / 2
        alpha = alpha_last + (alpha_init - alpha_last) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine

        grad, logits = loss_gradient(model, adv, y, negative_margin)
        if k == 0:
            zero_gradient = grad.flatten(1).abs().amax(dim=1) == 0
            vanishing = vanishing_gradient(grad)
        is_adv, size, margin = track(adv, logits, clean=k == 0)

        # Scale by the largest entry first: a tiny gradient would underflow in its norms.
        # A nonzero gradient then has every norm >= 1, a zero one stays zero.
        largest = grad.abs().amax(dim=dims, keepdim=True)
        grad /= largest.masked_fill_(largest == 0, 1.0)
        dual_norm = torch.linalg.vector_norm(grad, ord=dual, dim=dims) * largest.flatten()
        to_boundary = margin.abs_() / dual_norm.clamp_(min=_TINY)
        grown = eps * (1 + gamma)
        eps = torch.where(
            is_adv,
            torch.minimum(eps * (1 - gamma), best_norm),
            torch.where(found, grown, torch.maximum(grown, size + to_boundary)),
        )
        torch.minimum(eps, worst, out=eps)

        delta = adv.sub_(x)  # in place: adv is not needed any more
        l2 = torch.linalg.vector_norm(grad, dim=dims, keepdim=True).clamp_(min=1.0)
        delta.addcdiv_(grad, l2, value=alpha)
        radius = eps.view(view)
        if norm == "l2":
            length = torch.linalg.vector_norm(delta, dim=dims, keepdim=True).clamp_(min=_TINY)
            delta.mul_((radius / length).clamp_(max=1.0))
        else:
            torch.minimum(delta, radius, out=delta)
            torch.maximum(delta, -radius, out=delta)
        adv = delta.add_(x).clamp_(0.0, 1.0)

    # The last step's iterate has not been evaluated yet.
    with torch.no_grad():
        track(adv, check_output(model(adv), y), clean=False)
    return AttackResult(best_adv, zero_gradient, vanishing)


@ATTACKS.register("fmn", severity="eps", tags=("gradient", "minimum-norm"))
class FMN(MinimumNormAttack):
    """Fast Minimum-Norm attack (Pintor et al. 2021), L2 or L-inf; see the module docstring.

    Args:
        norm: ``l2`` or ``linf``, the norm minimised.
        steps: gradient steps, ``>= 1`` (100 by default; the reference code's default is 10).
        alpha_init: initial step size of the L2-normalised gradient, ``> 0`` (1.0, the
            reference default, for both norms).
        alpha_final: final step size after cosine annealing; ``alpha_init / 100`` when None.
        gamma_init: initial factor by which ``eps_k`` shrinks or grows, in ``[0, 1)``.
        gamma_final: final factor after cosine annealing, in ``[0, 1)``.
        eps: None for the unbounded search; a budget to use FMN as a bounded attack (a
            perturbation larger than ``eps`` is dropped and the image returned unchanged).
        channels_last: run convolutions in channels-last order (faster on CPU; the numbers
            can differ from the default layout in the last bits).
    """

    def __init__(
        self,
        norm: str = "l2",
        steps: int = 100,
        alpha_init: float = 1.0,
        alpha_final: float | None = None,
        gamma_init: float = 0.05,
        gamma_final: float = 0.001,
        eps: float | None = None,
        channels_last: bool = True,
    ) -> None:
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps)
        self.alpha_init = check_positive("alpha_init", alpha_init)
        self.alpha_final = (
            None if alpha_final is None else check_positive("alpha_final", alpha_final)
        )
        self.gamma_init = _check_gamma("gamma_init", gamma_init)
        self.gamma_final = _check_gamma("gamma_final", gamma_final)
        self.eps = check_optional_eps(eps)
        self.channels_last = bool(channels_last)

    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """:func:`fmn_search` with this attack's parameters (``generator`` is not used)."""
        return fmn_search(
            model, x, y, norm=self.norm, steps=self.steps, alpha_init=self.alpha_init,
            alpha_final=self.alpha_final, gamma_init=self.gamma_init,
            gamma_final=self.gamma_final,
        )  # fmt: skip
