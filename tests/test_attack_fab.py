"""Tests of the Fast Adaptive Boundary attack (robustlab.attack.fab)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from robustlab.attack import ATTACKS
from robustlab.attack.adaptive import EOT
from robustlab.attack.base import attack_mode, create_attack
from robustlab.attack.fab import FAB, fab_search, project_l2, project_linf
from robustlab.attack.minimum_norm import perturbation_norm
from robustlab.errors import InvalidParameterError
from robustlab.seeding import make_generator

Projection = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# --- projections against scipy -------------------------------------------------------------


def _projection_cases(kind: str, n: int = 6, d: int = 12) -> tuple[np.ndarray, ...]:
    """Points, normals (some entries zero) and offsets in float64 for one regime.

    ``free``: points in the middle, small offsets (the box never binds); ``binding``: points
    near the box faces and offsets that push many coordinates against them; ``infeasible``:
    offsets beyond what the whole box can reach.
    """
    rng = np.random.default_rng({"free": 0, "binding": 1, "infeasible": 2}[kind])
    w = rng.normal(size=(n, d))
    w[rng.random((n, d)) < 0.15] = 0.0
    if kind == "free":
        x = 0.4 + 0.2 * rng.random((n, d))
        fraction = rng.uniform(0.01, 0.1, size=n)
    else:
        x = np.where(
            rng.random((n, d)) < 0.5, rng.random((n, d)) * 0.1, 1 - rng.random((n, d)) * 0.1
        )
        fraction = (
            rng.uniform(0.3, 0.9, size=n) if kind == "binding" else rng.uniform(1.1, 3, size=n)
        )
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    # The largest |w . delta| the box allows in the direction sign: each coordinate to a face.
    reach = np.where(sign[:, None] * w > 0, 1 - x, x) * np.abs(w)
    c = sign * fraction * reach.sum(axis=1)
    return x, w, c


def _torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(a, dtype=torch.float32) for a in arrays]


def _linf_lp(x: np.ndarray, w: np.ndarray, c: float) -> float:
    """min t s.t. |delta_i| <= t, w . delta = c, 0 <= x + delta <= 1 (variables delta, t)."""
    d = len(x)
    cost = np.zeros(d + 1)
    cost[-1] = 1.0
    eye = np.eye(d)
    upper = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
    bounds = [(-xi, 1 - xi) for xi in x] + [(0, None)]
    lp = linprog(
        cost, A_ub=upper, b_ub=np.zeros(2 * d), A_eq=np.append(w, 0.0)[None], b_eq=[c],
        bounds=bounds, method="highs",
    )  # fmt: skip
    assert lp.status == 0
    return float(lp.fun)


def _box_reach_lp(x: np.ndarray, w: np.ndarray, sign: float) -> float:
    """max sign * w . delta over the box (an LP), i.e. how far the box reaches."""
    lp = linprog(-sign * w, bounds=[(-xi, 1 - xi) for xi in x], method="highs")
    assert lp.status == 0
    return float(-lp.fun)


def _l2_slsqp(x: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
    """min ||delta||^2 s.t. w . delta = c, 0 <= x + delta <= 1, by SLSQP."""
    result = minimize(
        lambda v: float(v @ v), np.zeros_like(x), jac=lambda v: 2 * v, method="SLSQP",
        bounds=[(-xi, 1 - xi) for xi in x],
        constraints=[{"type": "eq", "fun": lambda v: w @ v - c, "jac": lambda v: w}],
        options={"ftol": 1e-14, "maxiter": 500},
    )  # fmt: skip
    assert result.success, result.message
    return np.asarray(result.x)


def _check_in_box(x: torch.Tensor, delta: torch.Tensor) -> None:
    assert bool((x + delta >= -1e-6).all()) and bool((x + delta <= 1 + 1e-6).all())


@pytest.mark.parametrize("kind", ["free", "binding"])
def test_project_linf_matches_linear_program(kind: str) -> None:
    x, w, c = _projection_cases(kind)
    tx, tw, tc = _torch(x, w, c)
    delta = project_linf(tx, tw, tc)
    _check_in_box(tx, delta)
    assert torch.allclose((tw * delta).sum(dim=1), tc, atol=1e-5, rtol=1e-5)
    found = delta.abs().amax(dim=1)
    for i in range(len(x)):
        optimum = _linf_lp(x[i], w[i], c[i])
        assert found[i].item() == pytest.approx(optimum, rel=1e-5, abs=1e-6)
    assert bool((delta[tw == 0] == 0).all())
    if kind == "binding":  # the box really binds: some coordinates sit on a face
        faces = ((tx + delta).abs() < 1e-7) | ((tx + delta - 1).abs() < 1e-7)
        assert int((faces & (tw != 0)).sum()) >= len(x)


@pytest.mark.parametrize("kind", ["free", "binding"])
def test_project_l2_matches_slsqp(kind: str) -> None:
    x, w, c = _projection_cases(kind)
    tx, tw, tc = _torch(x, w, c)
    delta = project_l2(tx, tw, tc)
    _check_in_box(tx, delta)
    assert torch.allclose((tw * delta).sum(dim=1), tc, atol=1e-5, rtol=1e-5)
    for i in range(len(x)):
        reference = _l2_slsqp(x[i], w[i], c[i])
        ours = delta[i].double().numpy()
        np.testing.assert_allclose(ours, reference, atol=2e-5)
        # Exact: never longer than what SLSQP found (beyond float32 rounding).
        assert np.linalg.norm(ours) <= np.linalg.norm(reference) * (1 + 1e-5) + 1e-7
    # KKT: delta_i = clip(lambda w_i, -x_i, 1 - x_i), one lambda >= 0 per row (w oriented
    # so that c >= 0).
    for i in range(len(x)):
        wi, xi, di = w[i] * np.sign(c[i]), x[i], delta[i].double().numpy()
        free = (wi != 0) & (xi + di > 1e-6) & (xi + di < 1 - 1e-6)
        lam = float(np.median(di[free] / wi[free]))
        assert lam >= 0
        np.testing.assert_allclose(di[free] / wi[free], lam, rtol=1e-4)
        np.testing.assert_allclose(di, np.clip(lam * wi, -xi, 1 - xi), atol=1e-5)


@pytest.mark.parametrize("project", [project_linf, project_l2])
def test_project_infeasible_goes_as_far_as_the_box_allows(project: Projection) -> None:
    x, w, c = _projection_cases("infeasible")
    tx, tw, tc = _torch(x, w, c)
    delta = project(tx, tw, tc)
    _check_in_box(tx, delta)
    reached = (tw * delta).sum(dim=1)
    for i in range(len(x)):
        best = _box_reach_lp(x[i], w[i], float(np.sign(c[i])))
        assert float(np.sign(c[i])) * reached[i].item() == pytest.approx(best, rel=1e-5)
    # The corner: every coordinate with w_i != 0 on the face it moves towards, the rest still.
    corner = torch.where(tw * tc[:, None] > 0, 1 - tx, torch.where(tw * tc[:, None] < 0, -tx, 0.0))
    assert torch.allclose(delta, corner, atol=1e-7)


@pytest.mark.parametrize("project", [project_linf, project_l2])
def test_project_edge_cases(project: Projection) -> None:
    proj = project
    x = torch.full((3, 4), 0.5)
    w = torch.tensor([[1.0, -2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [1e-30, 0.0, 0.0, 0.0]])
    # On the hyperplane already: no step. A zero normal cannot move. A tiny normal: no underflow.
    delta = proj(x, w, torch.tensor([0.0, 1.0, 2e-31]))
    assert torch.equal(delta[0], torch.zeros(4)) and torch.equal(delta[1], torch.zeros(4))
    assert delta[2, 0].item() == pytest.approx(0.2, rel=1e-5) and bool((delta[2, 1:] == 0).all())


@pytest.mark.parametrize("project", [project_linf, project_l2])
def test_project_batched_layout_and_rows_independent(project: Projection) -> None:
    proj = project
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, 4, 4, generator=gen)
    w = torch.randn(5, 3, 4, 4, generator=gen)
    c = torch.randn(5, generator=gen)
    delta = proj(x, w, c)
    assert delta.shape == x.shape
    last = proj(
        x.contiguous(memory_format=torch.channels_last),
        w.contiguous(memory_format=torch.channels_last), c,
    )  # fmt: skip
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(last, delta, atol=1e-6)
    alone = torch.cat([proj(x[i : i + 1], w[i : i + 1], c[i : i + 1]) for i in range(5)])
    assert torch.equal(alone, delta)


# --- FAB on a linear classifier --------------------------------------------------------------


def _linear_problem(n: int = 48, side: int = 8) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear binary classifier and images in [0.35, 0.65], labelled by its predictions."""
    gen = torch.Generator().manual_seed(0)
    d = side * side
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=gen))
        lin.bias.copy_(-lin.weight @ torch.full((d,), 0.5))  # boundary through the centre
    net = nn.Sequential(nn.Flatten(), lin)
    x = 0.35 + 0.3 * torch.rand(n, 1, side, side, generator=gen)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    return net, x, y


def _exact_distance(net: nn.Module, x: torch.Tensor, norm: str) -> torch.Tensor:
    """``|w.x + b| / ||w||_*``: the exact minimal L2 / L-inf distance to the boundary."""
    lin = net.get_submodule("1")
    assert isinstance(lin, nn.Linear)
    w = (lin.weight[1] - lin.weight[0]).detach()
    b = (lin.bias[1] - lin.bias[0]).detach()
    dual = w.norm() if norm == "l2" else w.abs().sum()
    return (x.flatten(1) @ w + b).abs() / dual


@torch.no_grad()
def _predict(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits: torch.Tensor = net(x)
    return logits.argmax(dim=1)


@pytest.mark.parametrize("targets", [None, 1])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_classifier_exact_minimum(norm: str, targets: int | None) -> None:
    net, x, y = _linear_problem()
    exact = _exact_distance(net, x, norm)
    assert float(exact.max()) < 0.3  # far from the box faces: clipping never binds
    adv = FAB(norm=norm, steps=30, targets=targets)(net, x, y)
    found = perturbation_norm(adv - x, norm)
    assert bool((_predict(net, adv) != y).all())
    ratio = found / exact
    # Never below the true minimum; above it only by FAB's overshoot: on a linear model the
    # second iterate is the best, at (eta + beta (1 - eta) ...) ~ 1.005 times the minimum.
    assert float(ratio.min()) >= 1 - 1e-4
    assert float(ratio.max()) <= 1.01


def test_linear_classifier_smaller_overshoot_is_tighter() -> None:
    net, x, y = _linear_problem()
    exact = _exact_distance(net, x, "linf")
    adv = FAB(norm="linf", steps=30, eta=1.01)(net, x, y)
    ratio = perturbation_norm(adv - x, "linf") / exact
    assert float(ratio.min()) >= 1 - 1e-4 and float(ratio.max()) <= 1.002


def test_linear_box_binding_still_minimal() -> None:
    """Images near the box faces: the L-inf minimum must go around them (LP reference)."""
    gen = torch.Generator().manual_seed(5)
    lin = nn.Linear(6, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 6, generator=gen))
        lin.bias.zero_()
    net = nn.Sequential(nn.Flatten(), lin)
    x = torch.where(torch.rand(20, 1, 2, 3, generator=gen) < 0.5, 0.02, 0.98)
    x = x + 0.01 * torch.rand(x.shape, generator=gen)
    y = _predict(net, x)
    w = (lin.weight[1] - lin.weight[0]).detach()
    b = float((lin.bias[1] - lin.bias[0]).detach())
    adv = FAB(norm="linf", steps=50)(net, x, y)
    found = perturbation_norm(adv - x, "linf")
    fooled = _predict(net, adv) != y
    assert bool(fooled.all())
    flat, normal = x.flatten(1).double().numpy(), w.double().numpy()
    binds = 0
    for i in range(len(x)):
        margin = -(flat[i] @ normal + b)
        optimum = _linf_lp(flat[i], normal, margin)
        assert optimum * (1 - 1e-4) <= found[i].item() <= optimum * 1.01 + 1e-6
        binds += optimum > 1.01 * abs(margin) / np.abs(normal).sum()  # box-free minimum
    assert binds >= len(x) // 2  # the faces really constrain most of these minima


# --- FAB on a small CNN ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cnn_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random small CNN on random 14x14 images, labelled by its predictions (2 flipped)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )  # fmt: skip
    net.eval()
    x = torch.rand(24, 1, 14, 14, generator=torch.Generator().manual_seed(1))
    y = _predict(net, x).clone()
    y[:2] = (y[:2] + 1) % 10  # two images the model already misclassifies
    return net, x, y


@pytest.mark.parametrize(("norm", "targets"), [("linf", None), ("l2", None), ("linf", 3)])
def test_cnn_adversarials_valid_in_any_layout_and_batch(norm: str, targets: int | None) -> None:
    net, x, y = _cnn_problem()
    result = FAB(norm=norm, steps=40, targets=targets).run(net, x, y)
    adv = result.adversarial
    assert adv.is_contiguous() and adv.shape == x.shape
    assert bool(adv.min() >= 0) and bool(adv.max() <= 1)
    changed = (adv != x).flatten(1).any(dim=1)
    assert torch.equal(adv[:2], x[:2])  # already misclassified: unchanged, distance 0
    assert int(changed.sum()) >= len(x) - 4  # random CNNs are easy to fool
    assert bool((_predict(net, adv[changed]) != y[changed]).all())
    single = torch.cat([_predict(net, a[None]) for a in adv[changed]])
    assert bool((single != y[changed]).all())
    assert not bool(result.zero_gradient.any()) and not bool(result.vanishing_gradient.any())


@pytest.mark.parametrize(("norm", "targets"), [("linf", None), ("l2", 2)])
def test_more_steps_never_worse(norm: str, targets: int | None) -> None:
    """With the same seed the first iterations coincide, so more steps can only shrink norms."""
    net, x, y = _cnn_problem()
    norms = []
    for steps in (10, 40):
        adv = FAB(norm=norm, steps=steps, targets=targets)(net, x, y, make_generator(0))
        size = perturbation_norm(adv - x, norm)
        fooled = _predict(net, adv) != y
        norms.append(torch.where(fooled, size, math.inf))
    assert bool((norms[1] <= norms[0]).all())
    assert bool((norms[1] < norms[0]).any())


def test_more_targets_never_worse() -> None:
    net, x, y = _cnn_problem()
    sizes = []
    for targets in (1, 3):
        adv = FAB(norm="l2", steps=20, targets=targets)(net, x, y)
        fooled = _predict(net, adv) != y
        sizes.append(torch.where(fooled, perturbation_norm(adv - x, "l2"), math.inf))
    assert bool((sizes[1] <= sizes[0]).all())


def test_bounded_drops_larger_perturbations() -> None:
    net, x, y = _cnn_problem()
    free = FAB(norm="linf", steps=30)(net, x, y)
    size = perturbation_norm(free - x, "linf")
    eps = float(size[2:].median())
    for targets in (None, 2):
        bounded = FAB(norm="linf", steps=30, eps=eps, targets=targets)(net, x, y)
        bsize = perturbation_norm(bounded - x, "linf")
        assert bool((bsize <= eps * (1 + 1e-5) + 1e-7).all())
        kept = (bounded != x).flatten(1).any(dim=1)
        assert bool((_predict(net, bounded[kept]) != y[kept]).all())
        if targets is None:  # the same search: exactly the examples within eps survive
            inside = size <= eps
            assert torch.equal(bounded[inside], free[inside])
            assert torch.equal(bounded[~inside], x[~inside])


def test_bounded_restarts_and_targets_only_add_successes() -> None:
    net, x, y = _cnn_problem()
    eps = 0.04
    robust = []
    for targets, restarts in ((1, 1), (3, 1), (3, 3)):
        attack = FAB(norm="linf", steps=3, eps=eps, targets=targets, restarts=restarts)
        adv = attack(net, x, y, make_generator(0))
        assert bool((perturbation_norm(adv - x, "linf") <= eps + 1e-6).all())
        robust.append(_predict(net, adv) == y)
    assert bool((robust[1] <= robust[0]).all()) and bool((robust[2] <= robust[1]).all())
    assert int(robust[2].sum()) < int(robust[0].sum())  # short runs: restarts find more


def test_reproducible_bit_for_bit() -> None:
    net, x, y = _cnn_problem()
    attack = FAB(norm="l2", steps=15, restarts=3)
    assert attack.random
    first = attack(net, x, y, make_generator(7))
    second = attack(net, x, y, make_generator(7))
    other = attack(net, x, y, make_generator(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    with pytest.raises(InvalidParameterError, match="Generator"):
        attack(net, x, y)
    assert not FAB().random


def test_restarts_never_worse_than_the_first_run() -> None:
    net, x, y = _cnn_problem()
    one = FAB(norm="linf", steps=15)(net, x, y)
    more = FAB(norm="linf", steps=15, restarts=3)(net, x, y, make_generator(0))
    assert bool((perturbation_norm(more - x, "linf") <= perturbation_norm(one - x, "linf")).all())


def test_eot_estimator_gives_the_same_search() -> None:
    """A model with a loss_gradient method (EOT) gets one estimator call per class."""
    net, x, y = _cnn_problem()
    for targets in (None, 2):
        plain = FAB(norm="linf", steps=10, targets=targets, channels_last=False)
        wrapped = EOT(net, samples=1)
        a = plain(net, x, y)
        b = plain(wrapped, x, y)
        size_a, size_b = perturbation_norm(a - x, "linf"), perturbation_norm(b - x, "linf")
        assert torch.allclose(size_a, size_b, rtol=1e-4, atol=1e-6)


def test_targets_beyond_classes_means_all() -> None:
    gen = torch.Generator().manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(9, 3))
    x = torch.rand(6, 1, 3, 3, generator=gen)
    y = _predict(net, x)
    many = FAB(norm="linf", steps=10, targets=9)(net, x, y)
    two = FAB(norm="linf", steps=10, targets=2)(net, x, y)
    assert torch.equal(many, two)


def test_unfoolable_image_comes_back_unchanged() -> None:
    class Constant(nn.Module):
        """Logits that favour class 0 whatever the input (zero gradient everywhere)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3] * 0 + torch.tensor([1.0, 0.0, -1.0])

    x = torch.rand(3, 1, 2, 2)
    for targets in (None, 2):
        result = FAB(steps=5, targets=targets).run(Constant(), x, torch.zeros(3, dtype=torch.int64))
        assert torch.equal(result.adversarial, x)
        assert bool(result.zero_gradient.all()) and bool(result.vanishing_gradient.all())


def test_fab_search_lower_level() -> None:
    net, x, y = _linear_problem(n=4)
    with attack_mode(net):
        result = fab_search(net, x, y, norm="l2", steps=10, targets=1)
    assert bool((_predict(net, result.adversarial) != y).all())
    with pytest.raises(InvalidParameterError, match="steps"):
        fab_search(net, x, y, steps=0)
    with pytest.raises(InvalidParameterError, match="norm"):
        fab_search(net, x, y, norm="l1")
    with pytest.raises(InvalidParameterError, match="Generator"):
        fab_search(net, x, y, restarts=2)


# --- registry and parameters -----------------------------------------------------------------


def test_registered_and_created_from_a_spec() -> None:
    assert "fab" in ATTACKS.names()
    attack = create_attack("fab:norm=l2,steps=50,targets=9,eps=0.5")
    assert isinstance(attack, FAB)
    assert (attack.norm, attack.steps, attack.targets, attack.eps) == ("l2", 50, 9, 0.5)
    default = create_attack("fab")
    assert isinstance(default, FAB)
    assert (default.norm, default.steps, default.restarts, default.targets) == (
        "linf", 100, 1, None,
    )  # fmt: skip
    assert (default.alpha_max, default.eta, default.beta, default.eps) == (0.1, 1.05, 0.9, None)
    assert default.channels_last and default.minimum_norm


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"norm": "l1"}, "norm"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"alpha_max": -0.1}, "alpha_max"),
        ({"alpha_max": 1.5}, "alpha_max"),
        ({"alpha_max": True}, "alpha_max"),
        ({"eta": 0}, "eta"),
        ({"eta": math.inf}, "eta"),
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.1}, "beta"),
        ({"targets": 0}, "targets"),
        ({"targets": 1.5}, "targets"),
        ({"eps": -0.1}, "eps"),
        ({"eps": math.nan}, "eps"),
    ],
)
def test_bad_parameters(params: dict[str, object], name: str) -> None:
    with pytest.raises(InvalidParameterError, match=name):
        FAB(**params)  # type: ignore[arg-type]
