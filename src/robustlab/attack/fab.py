"""Fast Adaptive Boundary attack (FAB, FAB-T), L-inf and L2: per image, a minimal perturbation.

Croce and Hein (ICML 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack", Algorithm 1). FAB walks towards the decision boundary by repeatedly
projecting onto its linearisation, while a pull back towards the original image keeps the
perturbation small. At the iterate ``x_i`` of an image ``x`` with label ``y``:

1. **Linearise.** For a class ``l != y`` the decision boundary between ``l`` and ``y`` is
   approximated by the hyperplane ``F_l(x_i) + grad F_l(x_i) . (z - x_i) = 0`` with
   ``F_l = f_l - f_y`` (logits). Untargeted FAB takes the class whose hyperplane is closest,
   ``argmin_l |F_l(x_i)| / ||grad F_l(x_i)||_q`` (``q`` the dual norm: L1 for L-inf, L2 for
   L2), which needs the input gradient of every logit (one backward pass per class); FAB-T
   (``targets=k``) fixes ``l`` to a target class and needs one backward pass.
2. **Project (Eq. 8-9).** ``delta_i`` is the smallest step (in the attacked norm) from ``x_i``
   onto that hyperplane intersected with the box ``[0, 1]^d`` and ``delta_orig`` the smallest
   step from ``x`` onto the same hyperplane and box (:func:`project_linf`,
   :func:`project_l2`, exact and batched). Where the box does not reach the hyperplane, the
   step goes as far towards it as the box allows.
3. **Biased step (Eq. 10).** With ``alpha = min(||delta_i|| / (||delta_i|| + ||delta_orig||),
   alpha_max)`` and the overshoot ``eta``::

       x_{i+1} = clip((1 - alpha) (x_i + eta delta_i) + alpha (x + eta delta_orig), 0, 1)

   a step mostly from the iterate, the closer to the boundary it is the more from ``x``.
4. **Backward step.** If ``x_{i+1}`` is misclassified (argmax ``!= y``, in targeted mode too,
   as AutoAttack's FAB-T), it is kept when it is the image's smallest adversarial point so
   far, and the search continues from ``x + beta (x_{i+1} - x)``, back towards ``x``.

Each step costs one forward and one backward pass per class (untargeted) or one backward pass
(FAB-T), plus the forward pass that tests ``x_{i+1}``. Restart ``r > 0`` starts at a random
point at distance ``min(best, eps) / 2`` from ``x`` (``best``: the image's smallest
perturbation so far; uniform noise for L-inf, Gaussian for L2, as the reference), the first one
at ``x`` itself. FAB-T runs the search towards each of the ``k`` classes with the highest clean
logits other than ``y`` (targets outer, restarts inner). Per image, the smallest adversarial
point over all runs is returned; an image never fooled comes back unchanged, as does one the
model already misclassifies (distance 0). The search is deterministic except for the restarts,
which draw from the generator.

**Use.** Unbounded (``eps=None``) FAB returns each image's minimal perturbation found, hence
the whole robust-accuracy-vs-eps curve, like :mod:`robustlab.attack.fmn`. With ``eps`` set it
is a bounded attack (``fab:norm=linf,eps=0.3,targets=9`` is AutoAttack's FAB-T): perturbations
larger than ``eps`` are dropped (:class:`robustlab.attack.minimum_norm.MinimumNormAttack`),
restarts start within ``eps`` and every run after the first attacks only the images no earlier
run fooled within ``eps``. Untargeted FAB takes ``classes`` backward passes per step and holds
the Jacobian (``N x classes x pixels`` numbers); FAB-T with ``k`` targets up to ``k`` times one
backward pass, but in bounded use later targets see few images.

**Departures from the reference code** (``fab_base.py``, ``fab_pt.py`` and
``fab_projections.py`` in AutoAttack). (1) The projections solve the piecewise-linear
equation of the constrained minimum exactly from sorted breakpoints (the reference
bisects over sorted indices; the minimiser is the same), and where the hyperplane is out of
the box's reach they return the box corner that goes furthest towards it (the reference
returns an unclipped uniform step there, clipped later by the update, which gives the same
point but a larger ``||delta||`` in ``alpha``). (2) An iterate is *kept* only when it is
misclassified with a margin above rounding (:data:`robustlab.attack.fmn.MARGIN_TOLERANCE`), as
in FMN, so that a returned example stays misclassified in another memory layout or batch; the
backward step follows the plain argmax, as the reference (with the margin there too, iterates
that land within rounding of the boundary stay trapped on it: on a small trained MNIST MLP
one image in ten then ended 12% above the reference; as it is, all 64 within 0.1%). (3) Restarts
start at ``min(best, eps) / 2`` as in the authors' original code (AutoAttack's copy restarts at
``eps / 2``, the same for the images it attacks); without ``eps``, the reference's default
budget (0.3 for L-inf, 1.0 for L2: :data:`RESTART_RADIUS`) stands in for it. (4) Unbounded,
every run attacks every image the model classifies correctly, keeping the smallest
perturbation (AutoAttack attacks only the images not yet fooled within its ``eps``, which this
does in bounded use). (5) ``targets`` larger than ``classes - 1`` means all other classes, as
in :class:`robustlab.attack.apgd.APGD`. (6) No L1 version.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.attack.minimum_norm import perturbation_norm, robust_accuracy_curve
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x = 0.25 + 0.5 * torch.rand(8, 1, 4, 4)
    >>> y = net(x).argmax(dim=1)  # correctly classified by construction
    >>> adv = FAB(norm="linf", steps=20)(net, x, y)
    >>> fooled = net(adv).argmax(dim=1) != y
    >>> bool(fooled.all())
    True
    >>> distance = perturbation_norm(adv - x, "linf")
    >>> robust_accuracy_curve(distance.numpy(), fooled.numpy(), [0.0, 1.0]).tolist()
    [1.0, 0.0]
    >>> targeted = FAB(norm="l2", steps=20, targets=2)(net, x, y)  # FAB-T
    >>> bool((net(targeted).argmax(dim=1) != y).all())
    True
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
from robustlab.attack.fmn import MARGIN_TOLERANCE, negative_margin
from robustlab.attack.minimum_norm import (
    BOUND_SLACK,
    EPS_SLACK,
    MinimumNormAttack,
    check_optional_eps,
    perturbation_norm,
)
from robustlab.errors import InvalidParameterError, ModelError

#: Radius scale of a restart without ``eps`` and without an adversarial point yet: the
#: reference's default budgets (``DEFAULT_EPS_DICT_BY_NORM``); a restart starts at half of it.
RESTART_RADIUS = {"linf": 0.3, "l2": 1.0}

# The reference's floor on the step norms in alpha (keeps 0 / 0 out).
_MIN_STEP = 1e-8
# The reference's floor on a dual norm when the closest hyperplane is chosen.
_TINY = 1e-12


class _Layout:
    """Flattens images ``(N, C, H, W)`` in the memory order of a reference batch and back.

    The projections and norms do not depend on the order of the coordinates, so iterates are
    kept flat in the order the reference batch is stored in: a channels-last batch then stays
    channels-last without copies when it goes back to the model.
    """

    def __init__(self, like: torch.Tensor) -> None:
        self.shape = like.shape
        self.channels_last = (
            like.ndim == 4
            and not like.is_contiguous()
            and like.is_contiguous(memory_format=torch.channels_last)
        )

    def flat(self, t: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` (a view where the layouts agree)."""
        if self.channels_last:
            return t.permute(0, 2, 3, 1).reshape(len(t), -1)
        return t.reshape(len(t), -1)

    def image(self, flat: torch.Tensor) -> torch.Tensor:
        """The images of the flat batch ``(n, d)``, in the reference's layout."""
        rest = self.shape[1:]
        if self.channels_last:
            c, h, w = rest
            return flat.view(len(flat), h, w, c).permute(0, 3, 1, 2)
        return flat.view(len(flat), *rest)


def _solve_budget(slope: torch.Tensor, limit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest ``t >= 0`` with ``sum_i slope_i min(t, limit_i) >= target``.

    ``g(t) = sum_i slope_i min(t, limit_i)`` is continuous, piecewise linear and
    non-decreasing, with breakpoints at the limits: sorted, ``g(l_(k)) = sum_{j<k} s_(j) l_(j) +
    l_(k) sum_{j>=k} s_(j)``, and between ``l_(k-1)`` and ``l_(k)`` the equation is linear.

    Args:
        slope: ``(N, d)``, ``>= 0``.
        limit: ``(N, d)``, ``>= 0``.
        target: ``(N,)``, ``>= 0``.

    Returns:
        ``(N,)``; ``inf`` where even ``g(inf) = sum_i slope_i limit_i`` falls short.
    """
    d = slope.shape[1]
    limits, order = limit.sort(dim=1)
    slopes = slope.gather(1, order)
    spent = slopes * limits
    before = torch.cat((spent.new_zeros(len(spent), 1), spent.cumsum(dim=1)[:, :-1]), dim=1)
    rest = slopes.flip(1).cumsum(dim=1).flip(1)  # sum_{j >= k} s_(j)
    reached = before + limits * rest  # g at each breakpoint
    k = (reached < target[:, None]).sum(dim=1, keepdim=True)
    feasible = k[:, 0] < d
    k = k.clamp_(max=d - 1)
    t = (target - before.gather(1, k)[:, 0]) / rest.gather(1, k)[:, 0].clamp(min=_TINY)
    lower = torch.where(
        k[:, 0] > 0, limits.gather(1, (k - 1).clamp_(min=0))[:, 0], torch.zeros_like(t)
    )
    t = torch.minimum(torch.maximum(t, lower), limits.gather(1, k)[:, 0])
    return torch.where(feasible, t, torch.full_like(t, math.inf))


def _project_flat(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """:func:`project_linf` / :func:`project_l2` on flat ``(N, d)`` points."""
    # Orient every hyperplane so that c >= 0, and scale w to a largest entry of 1 so that
    # tiny gradients do not underflow in the squares below.
    sign = torch.where(c < 0, -1.0, 1.0).to(w.dtype)[:, None]
    scale = w.abs().amax(dim=1, keepdim=True)
    scale = scale.masked_fill_(scale == 0, 1.0)
    w = w * (sign / scale)
    target = c.abs() / scale[:, 0]
    # How far each coordinate may move in the direction that helps: to 1 or to 0.
    room = torch.where(w > 0, 1 - x, torch.where(w < 0, x, torch.zeros_like(x))).clamp_(min=0)
    size = w.abs()
    if norm == "linf":
        # delta_i = sign(w_i) min(t, room_i): the change is sum_i |w_i| min(t, room_i).
        t = _solve_budget(size, room, target)
        return torch.minimum(room, t[:, None]).mul_(w.sign())
    # delta_i = clip(lambda w_i, lo_i, hi_i) = w_i min(lambda, room_i / |w_i|) (KKT):
    # the change is sum_i w_i^2 min(lambda, room_i / |w_i|).
    ratio = torch.where(size > 0, room / size.clamp(min=torch.finfo(w.dtype).tiny), 0.0)
    lam = _solve_budget(size * size, ratio, target)
    return torch.minimum(ratio, lam[:, None]).mul_(w)


def _project(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    layout = _Layout(x)
    delta = _project_flat(layout.flat(x), layout.flat(w), c, norm)
    return layout.image(delta)


def project_linf(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smallest L-inf step from ``x`` onto the hyperplane ``w . delta = c`` in the box.

    Solves, per sample, ``min ||delta||_inf`` subject to ``w . delta = c`` and ``x + delta`` in
    ``[0, 1]^d``, exactly and batched. With ``c >= 0`` (else flip ``w`` and ``c``), a budget
    ``t`` changes ``w . delta`` by at most ``g(t) = sum_i |w_i| min(t, room_i)``, ``room_i``
    being how far coordinate ``i`` can move in the direction ``sign(w_i)`` inside the box;
    ``g`` is piecewise linear and non-decreasing, so the minimal ``t`` solves ``g(t) = c`` on
    one segment between two sorted rooms, and ``delta_i = sign(w_i) min(t, room_i)``. Where
    even the whole box falls short (``g(inf) < c``), the box corner that goes furthest towards
    the hyperplane is returned (``delta_i = sign(w_i) room_i``); coordinates with ``w_i = 0``
    do not move.

    Args:
        x: points ``(N, ...)`` in ``[0, 1]``.
        w: hyperplane normals, the shape of ``x``.
        c: offsets ``(N,)``.

    Returns:
        ``delta``, the shape (and memory layout) of ``x``.

    Example:
        >>> import torch
        >>> delta = project_linf(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 2.0]]),
        ...                      torch.tensor([0.3]))
        >>> [round(v, 4) for v in delta[0].tolist()]  # t = 0.3 / (1 + 2) in every coordinate
        [0.1, 0.1]
        >>> x, w = torch.tensor([[0.95, 0.5]]), torch.tensor([[1.0, 1.0]])
        >>> [round(v, 4) for v in project_linf(x, w, torch.tensor([0.2]))[0].tolist()]
        [0.05, 0.15]
        >>> [round(v, 4) for v in project_linf(x, w, torch.tensor([5.0]))[0].tolist()]
        [0.05, 0.5]
    """
    return _project(x, w, c, "linf")


def project_l2(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smallest L2 step from ``x`` onto the hyperplane ``w . delta = c`` in the box.

    Solves, per sample, ``min ||delta||_2`` subject to ``w . delta = c`` and ``x + delta`` in
    ``[0, 1]^d``, exactly and batched. By the KKT conditions (``c >= 0``, else flip both) the
    minimiser is ``delta_i = clip(lambda w_i, -x_i, 1 - x_i)`` for the multiplier ``lambda >=
    0`` with ``sum_i w_i clip(lambda w_i, ...) = c``, a piecewise-linear non-decreasing
    equation whose breakpoints (where coordinates hit the box) are sorted and solved on one
    segment. Where even the whole box falls short, the box corner that goes furthest towards
    the hyperplane is returned; coordinates with ``w_i = 0`` do not move.

    Args:
        x: points ``(N, ...)`` in ``[0, 1]``.
        w: hyperplane normals, the shape of ``x``.
        c: offsets ``(N,)``.

    Returns:
        ``delta``, the shape (and memory layout) of ``x``.

    Example:
        >>> import torch
        >>> delta = project_l2(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 2.0]]),
        ...                    torch.tensor([0.3]))
        >>> [round(v, 4) for v in delta[0].tolist()]  # lambda * w with lambda = 0.3 / 5
        [0.06, 0.12]
        >>> x, w = torch.tensor([[0.95, 0.5]]), torch.tensor([[1.0, 1.0]])
        >>> [round(v, 4) for v in project_l2(x, w, torch.tensor([0.2]))[0].tolist()]
        [0.05, 0.15]
        >>> [round(v, 4) for v in project_l2(x, w, torch.tensor([-5.0]))[0].tolist()]
        [-0.95, -0.5]
    """
    return _project(x, w, c, "l2")


def _difference_jacobian(
    model: nn.Module, image: torch.Tensor, y: torch.Tensor, layout: _Layout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F_l = f_l - f_y`` ``(N, C)``, their flat input gradients ``(N, C, d)`` and the logits.

    One forward pass and one backward pass per class (measured as fast as a vmapped backward
    and faster than a replicated batch on CPU). A model with a ``loss_gradient`` method (EOT)
    gets one call per class instead, so that every gradient is its estimate.
    """
    rows = torch.arange(len(y), device=y.device)
    estimator = getattr(model, "loss_gradient", None)
    if callable(estimator):

        def difference(cls: int) -> tuple[torch.Tensor, torch.Tensor]:
            return loss_gradient(model, image, y, lambda z, t: z[:, cls] - z[rows, t])

        grad, logits = difference(0)
        grads = [grad]
        for cls in range(1, logits.shape[1]):
            grad, more = difference(cls)
            grads.append(grad)
            logits = logits + more
        logits = logits / len(grads)
        jacobian = torch.stack([layout.flat(g) for g in grads], dim=1)
    else:
        with torch.enable_grad():
            leaf = image.detach().requires_grad_(True)
            out = check_output(model(leaf), y)
        if not out.requires_grad:
            loss_gradient(model, image, y)  # raises the ModelError that explains it
        classes = out.shape[1]
        jacobian = image.new_empty(len(y), classes, layout.flat(image[:1]).shape[1])
        for cls in range(classes):
            seed = torch.zeros_like(out)
            seed[:, cls] += 1
            seed[rows, y] -= 1
            (grad,) = torch.autograd.grad(
                out, leaf, seed, retain_graph=cls < classes - 1, allow_unused=True
            )
            if grad is None:
                raise ModelError(
                    "the model's output does not depend differentiably on its input; attack "
                    "it through robustlab.attack.adaptive.bpda"
                )
            jacobian[:, cls] = layout.flat(grad)
        logits = out.detach()
        if torch.isnan(jacobian).any():
            raise ModelError("the input gradient holds NaN values; check the model and its input")
    values = logits - logits.gather(1, y[:, None])
    return values, jacobian, logits


def _linearise(
    model: nn.Module,
    flat: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    norm: str,
    layout: _Layout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen boundary's linearisation at ``flat``: its normal ``(n, d)`` and ``F`` ``(n,)``.

    Untargeted: the class ``l != y`` whose hyperplane is closest in the attacked norm; targeted:
    ``l = target``. ``F = f_l - f_y`` (negative while ``y`` wins).
    """
    image = layout.image(flat)
    rows = torch.arange(len(y), device=y.device)
    if target is not None:
        goal = target

        def difference(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return z[rows, goal] - z[rows, t]

        grad, logits = loss_gradient(model, image, y, difference)
        return layout.flat(grad), logits[rows, goal] - logits[rows, y]
    values, jacobian, _ = _difference_jacobian(model, image, y, layout)
    dual = jacobian.abs().sum(dim=2) if norm == "linf" else jacobian.norm(dim=2)
    distance = values.abs() / (dual + _TINY)
    distance[rows, y] = math.inf
    chosen = distance.argmin(dim=1)
    return jacobian[rows, chosen], values[rows, chosen]


def _is_adversarial(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Misclassified with a margin above rounding (as :func:`robustlab.attack.fmn.fmn_search`)."""
    scale = logits.abs().amax(dim=1).clamp_(min=1.0)
    return negative_margin(logits, y) > MARGIN_TOLERANCE * scale


def _fab_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    target: torch.Tensor | None,
    best_norm: torch.Tensor,
    best_adv: torch.Tensor,
    *,
    norm: str,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
    layout: _Layout,
) -> torch.Tensor:
    """One FAB run on flat images ``x`` ``(n, d)`` from ``start``; updates the bests in place.

    Returns:
        The first linearisation's normal ``(n, d)`` (for the gradient flags).
    """
    n = len(x)
    current = start
    first = x
    for step in range(steps):
        w, value = _linearise(model, current, y, target, norm, layout)
        if step == 0:
            first = w
        # The hyperplane F + w . (z - current) = 0, seen from current and from x.
        offset = torch.cat((-value, -value + (w * (current - x)).sum(dim=1)))
        delta = _project_flat(torch.cat((current, x)), torch.cat((w, w)), offset, norm)
        sizes = perturbation_norm(delta, norm).clamp_(min=_MIN_STEP)
        near, far = sizes[:n], sizes[n:]
        alpha = (near / (near + far)).clamp_(max=alpha_max)[:, None]
        step_near, step_far = delta[:n], delta[n:]
        proposal = (
            (current + eta * step_near).mul_(1 - alpha)
            + (x + eta * step_far).mul_(alpha)
        ).clamp_(0.0, 1.0)  # fmt: skip
        with torch.no_grad():
            logits = check_output(model(layout.image(proposal)), y)
        # The search follows the plain argmax (as the reference); a point is kept only with
        # a margin above rounding. Requiring the margin for the backward step too would trap
        # iterates that land within rounding of the boundary: from there the projections
        # only converge onto it, never past the margin.
        fooled = logits.argmax(dim=1) != y
        size = perturbation_norm(proposal - x, norm)
        better = _is_adversarial(logits, y) & (size < best_norm)
        best_norm.copy_(torch.where(better, size, best_norm))
        best_adv.copy_(torch.where(better[:, None], proposal, best_adv))
        # Backward step: from an adversarial point, continue closer to x.
        current = torch.where(fooled[:, None], x + beta * (proposal - x), proposal)
    return first


def fab_search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    targets: int | None = None,
    eps: float | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """FAB's search: per image, the smallest adversarial point over all runs.

    The engine of :class:`FAB`; ``model`` must already be in attack mode
    (:func:`robustlab.attack.base.attack_mode`) and the batch validated (:meth:`Attack.run`
    does both). Perturbations larger than ``eps`` are *not* dropped here (the attack's
    :meth:`~robustlab.attack.minimum_norm.MinimumNormAttack.perturb` does that); ``eps`` sets
    the restart radius and which images later runs attack.

    Args:
        model: the classifier, returning ``(N, classes)`` logits.
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        norm: ``linf`` or ``l2``.
        steps: iterations per run, ``>= 1``.
        restarts: runs per target, ``>= 1``; all but the first start at a random point.
        alpha_max: the largest weight of the step from ``x``, in ``[0, 1]``.
        eta: overshoot of the projections, ``> 0``.
        beta: backward step factor, in ``(0, 1]``.
        targets: None for untargeted FAB; ``k >= 1`` for FAB-T towards the ``k`` classes with
            the highest clean logits other than ``y`` (all other classes when ``k`` is
            larger).
        eps: None (unbounded) or the budget of a bounded attack.
        generator: the source of the restarts' random starts (needed when ``restarts > 1``).

    Returns:
        The smallest adversarial point found per image (the image itself where none, or
        where the model misclassifies it already), with the zero / vanishing flags of the
        first linearisation's gradient (false for images not attacked).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = 0.4 + 0.2 * torch.rand(3, 1, 2, 2)
        >>> y = net(x).argmax(dim=1)
        >>> result = fab_search(net, x, y, norm="l2", steps=10)
        >>> bool((net(result.adversarial).argmax(dim=1) != y).all())
        True
    """
    norm = check_norm(norm)
    steps = check_int("steps", steps)
    restarts = check_int("restarts", restarts)
    alpha_max = _check_fraction("alpha_max", alpha_max, allow_zero=True)
    eta = check_positive("eta", eta)
    beta = _check_fraction("beta", beta, allow_zero=False)
    targets = None if targets is None else check_int("targets", targets)
    eps = check_optional_eps(eps)
    if restarts > 1 and generator is None:
        raise InvalidParameterError(
            f"restarts={restarts} draws random starts: pass a torch.Generator, e.g. "
            "robustlab.seeding.make_generator(seed, x.device)"
        )

    n = len(x)
    layout = _Layout(x)
    flat_x = layout.flat(x)
    best_adv = flat_x.clone()
    zero_gradient = torch.zeros(n, dtype=torch.bool, device=x.device)
    vanishing = zero_gradient.clone()
    with torch.no_grad():
        clean = check_output(model(x), y).detach()
    classes = clean.shape[1]
    correct = clean.argmax(dim=1) == y
    best_norm = torch.where(correct, math.inf, 0.0).to(x.dtype)
    if classes < 2:
        return AttackResult(x.clone(), zero_gradient, vanishing)

    goals: list[torch.Tensor | None] = [None]
    if targets is not None:
        # The other classes, highest clean logit first (the label sorts last).
        ranked = clean.scatter(1, y[:, None], -math.inf).sort(dim=1, descending=True, stable=True)
        goals = [ranked.indices[:, rank] for rank in range(min(targets, classes - 1))]
    # In bounded use, an image fooled within eps is done (the slack of MinimumNormAttack).
    done_below = -math.inf if eps is None else eps + min(BOUND_SLACK, eps * EPS_SLACK + 1e-7)
    radius_cap = RESTART_RADIUS[norm] if eps is None else eps
    first_run = True
    for goal in goals:
        for restart in range(restarts):
            attacked = (correct & (best_norm > done_below)).nonzero().flatten()
            if len(attacked) == 0:
                continue
            xs, ys = flat_x[attacked], y[attacked]
            start = xs
            if restart > 0:
                radius = best_norm[attacked].clamp(max=radius_cap)[:, None] / 2
                start = (xs + radius * _direction(x[attacked], norm, generator, layout)).clamp_(
                    0.0, 1.0
                )
            runs_norm, runs_adv = best_norm[attacked], best_adv[attacked]
            first = _fab_run(
                model, xs, ys, start, None if goal is None else goal[attacked], runs_norm,
                runs_adv, norm=norm, steps=steps, alpha_max=alpha_max, eta=eta, beta=beta,
                layout=layout,
            )  # fmt: skip
            best_norm[attacked] = runs_norm
            best_adv[attacked] = runs_adv
            if first_run:
                zero_gradient[attacked] = first.abs().amax(dim=1) == 0
                vanishing[attacked] = vanishing_gradient(first)
                first_run = False
    return AttackResult(layout.image(best_adv), zero_gradient, vanishing)


def _direction(
    like: torch.Tensor, norm: str, generator: torch.Generator | None, layout: _Layout
) -> torch.Tensor:
    """Random flat directions of unit norm: uniform (L-inf) or Gaussian (L2), as the reference.

    Drawn in the logical ``(N, C, H, W)`` order, so the start does not depend on the layout.
    """
    if norm == "linf":
        noise = torch.rand(like.shape, dtype=like.dtype, device=like.device, generator=generator)
        noise = 2 * noise - 1
    else:
        noise = torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    flat = layout.flat(noise)
    return flat / perturbation_norm(flat, norm).clamp(min=_TINY)[:, None]


def _check_fraction(name: str, value: float, *, allow_zero: bool) -> float:
    low = "[0" if allow_zero else "(0"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 <= value <= 1 if allow_zero else 0 < value <= 1)
    ):
        raise InvalidParameterError(f"{name} must be a number in {low}, 1], got {value!r}")
    return float(value)


@ATTACKS.register("fab", severity="eps", tags=("gradient", "minimum-norm"))
class FAB(MinimumNormAttack):
    """Fast Adaptive Boundary attack (Croce & Hein 2020), L-inf or L2; see the module docstring.

    Args:
        norm: ``linf`` or ``l2``, the norm minimised.
        steps: iterations per run, ``>= 1`` (100, as the reference).
        restarts: runs per target, ``>= 1``; every one after the first starts at a random
            point (drawn from the generator) at half the smaller of ``eps`` and the best
            perturbation so far.
        alpha_max: the largest weight of the step from the original image, in ``[0, 1]``.
        eta: overshoot of the projections onto the linearised boundary, ``> 0``.
        beta: backward step factor after an adversarial iterate, in ``(0, 1]``.
        targets: None for untargeted FAB (one backward pass per class and step); ``k >= 1``
            for FAB-T towards the ``k`` classes with the highest clean logits other than the
            label, one run each (AutoAttack uses 9; a larger ``k`` than ``classes - 1`` means
            all).
        eps: None for the unbounded search; a budget to use FAB as a bounded attack (a
            perturbation larger than ``eps`` is dropped and the image returned unchanged).
        channels_last: run convolutions in channels-last order (faster on CPU; the numbers
            can differ from the default layout in the last bits).
    """

    def __init__(
        self,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        targets: int | None = None,
        eps: float | None = None,
        channels_last: bool = True,
    ) -> None:
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps)
        self.restarts = check_int("restarts", restarts)
        self.alpha_max = _check_fraction("alpha_max", alpha_max, allow_zero=True)
        self.eta = check_positive("eta", eta)
        self.beta = _check_fraction("beta", beta, allow_zero=False)
        self.targets = None if targets is None else check_int("targets", targets)
        self.eps = check_optional_eps(eps)
        self.channels_last = bool(channels_last)

    @property
    def random(self) -> bool:
        """Restarts after the first draw their starts from the generator."""
        return self.restarts > 1

    def search(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """:func:`fab_search` with this attack's parameters."""
        return fab_search(
            model, x, y, norm=self.norm, steps=self.steps, restarts=self.restarts,
            alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, targets=self.targets,
            eps=self.eps, generator=generator,
        )  # fmt: skip
