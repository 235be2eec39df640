"""Tests of the Fast Minimum-Norm attack (robustlab.attack.fmn)."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from torch import nn

from robustlab.attack.base import attack_mode, create_attack, loss_gradient
from robustlab.attack.fmn import FMN, fmn_search, negative_margin
from robustlab.attack.minimum_norm import perturbation_norm, robust_accuracy_curve
from robustlab.errors import InvalidParameterError


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
    lin = net[1]
    w = (lin.weight[1] - lin.weight[0]).detach()
    b = (lin.bias[1] - lin.bias[0]).detach()
    dual = w.norm() if norm == "l2" else w.abs().sum()
    return (x.flatten(1) @ w + b).abs() / dual


@torch.no_grad()
def _predict(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x).argmax(dim=1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_classifier_exact_minimum(norm: str) -> None:
    net, x, y = _linear_problem()
    exact = _exact_distance(net, x, norm)
    # Far enough from the box edges that clipping never binds.
    assert float(exact.max()) < 0.3
    adv = FMN(norm=norm, steps=100)(net, x, y)
    found = perturbation_norm(adv - x, norm)
    fooled = _predict(net, adv) != y
    assert bool(fooled.all())
    assert bool((found >= exact * (1 - 1e-3) - 1e-6).all())  # never below the true minimum
    far = exact > 0.2 * exact.median()  # relative error is meaningless on the boundary
    assert int(far.sum()) > len(x) // 2
    assert bool((found[far] <= exact[far] * 1.02).all())
    assert float((found[far] / exact[far]).median()) < 1.005


def test_linear_multiclass_flips_every_reported_image() -> None:
    gen = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.rand(40, 1, 4, 4, generator=gen)
    y = torch.randint(0, 5, (40,), generator=gen)  # some images are misclassified already
    for norm in ("l2", "linf"):
        adv = FMN(norm=norm, steps=50)(net, x, y)
        changed = (adv != x).flatten(1).any(dim=1)
        pred = _predict(net, adv)
        assert bool((pred[changed] != y[changed]).all())
        assert bool(adv.min() >= 0) and bool(adv.max() <= 1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_conv_net_adversarials_flip_in_any_layout_and_batch(norm: str) -> None:
    """FMN ends at the boundary: its examples must not flip back outside channels-last."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )  # fmt: skip
    x = torch.rand(64, 1, 14, 14)
    y = _predict(net, x)
    result = FMN(norm=norm, steps=100).run(net, x, y)
    assert result.adversarial.is_contiguous()
    changed = (result.adversarial != x).flatten(1).any(dim=1)
    assert bool(changed.all())
    assert bool((_predict(net, result.adversarial) != y).all())
    single = torch.cat([_predict(net, a[None]) for a in result.adversarial])
    assert bool((single != y).all())


def _first_and_last(trace: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the best norm when the first adversarial was found, and at the end."""
    best = torch.stack(trace)  # (steps + 1, N), inf before the first adversarial
    first_step = torch.isfinite(best).to(torch.int64).argmax(dim=0)
    return best[first_step, torch.arange(best.shape[1])], best[-1]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_trace_best_norm_non_increasing(norm: str) -> None:
    net, x, y = _linear_problem()
    trace: list[torch.Tensor] = []
    with attack_mode(net):
        result = fmn_search(net, x, y, norm=norm, steps=60, trace=trace)
    assert len(trace) == 61
    best = torch.stack(trace)
    assert bool(torch.isinf(best[0]).all())  # nothing adversarial at the clean images
    assert bool((best[1:] <= best[:-1]).all())
    assert bool(torch.isfinite(best[-1]).all())
    assert torch.equal(best[-1], perturbation_norm(result.adversarial - x, norm))
    exact = _exact_distance(net, x, norm)
    far = exact > 0.2 * exact.median()
    assert float((best[-1][far] / exact[far]).max()) < 1.02


@pytest.mark.parametrize(("norm", "default_gain"), [("l2", 1.01), ("linf", 1.05)])
def test_trace_shrinks_after_first_adversarial(norm: str, default_gain: float) -> None:
    """On a trained MLP the first adversarial overshoots; the search then shrinks it."""
    net, x, y = _trained_mlp()
    finals = []
    for gamma_init, gain in ((0.05, default_gain), (0.3, 1.1)):
        trace: list[torch.Tensor] = []
        with attack_mode(net):
            fmn_search(net, x, y, norm=norm, steps=100, gamma_init=gamma_init, trace=trace)
        first, last = _first_and_last(trace)
        assert bool(torch.isfinite(last).all())
        assert float((first / last).median()) > gain
        finals.append(float(last.median()))
    # A coarser first radius (larger gamma_init) is shrunk back to about the same norms.
    assert finals[1] <= finals[0] * 1.01


def test_already_misclassified_unchanged() -> None:
    net, x, y = _linear_problem(n=16)
    wrong = torch.arange(16) % 2 == 0
    labels = torch.where(wrong, 1 - y, y)
    for norm in ("l2", "linf"):
        result = FMN(norm=norm, steps=30).run(net, x, labels)
        assert torch.equal(result.adversarial[wrong], x[wrong])
        assert bool((result.adversarial[~wrong] != x[~wrong]).flatten(1).any(dim=1).all())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_eps_bound(norm: str) -> None:
    net, x, y = _linear_problem()
    exact = _exact_distance(net, x, norm)
    eps = float(exact.median())
    adv = FMN(norm=norm, steps=100, eps=eps)(net, x, y)
    size = perturbation_norm(adv - x, norm)
    beyond = exact > eps
    assert torch.equal(adv[beyond], x[beyond])
    assert bool((size <= eps * (1 + 1e-5) + 1e-7).all())
    inside = exact < eps * 0.97
    assert bool((_predict(net, adv[inside]) != y[inside]).all())


def test_unfoolable_image_comes_back_unchanged() -> None:
    class Constant(nn.Module):
        """Logits that favour class 0 whatever the input (zero gradient everywhere)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :2] * 0 + torch.tensor([1.0, 0.0])

    x = torch.rand(3, 1, 2, 2)
    result = FMN(steps=5).run(Constant(), x, torch.zeros(3, dtype=torch.int64))
    assert torch.equal(result.adversarial, x)
    assert bool(result.zero_gradient.all()) and bool(result.vanishing_gradient.all())


@functools.lru_cache(maxsize=1)
def _trained_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP trained for a few seconds on mnist-sample; 64 correctly classified digits."""
    from robustlab.data.datasets import load_dataset

    ds = load_dataset("mnist-sample")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    images = ds.train.images.float() / 255
    labels = ds.train.labels
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(images), generator=gen).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(images[idx]), labels[idx]).backward()
            opt.step()
    net.eval()
    x = ds.test.images[:100].float() / 255
    y = ds.test.labels[:100]
    keep = _predict(net, x) == y
    return net, x[keep][:64], y[keep][:64]


def _pgd_l2_bisection(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, hi: float = 8.0, rounds: int = 10
) -> torch.Tensor:
    """Per image, the smallest L2 budget at which 20-step L2 PGD fools it (bisection)."""
    lo_b = torch.zeros(len(x))
    hi_b = torch.full((len(x),), hi)
    view = (-1, 1, 1, 1)
    for _ in range(rounds):
        eps = ((lo_b + hi_b) / 2).view(view)
        adv = x.clone()
        for _ in range(20):
            grad, _ = loss_gradient(net, adv, y)
            grad /= grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(view)
            delta = adv + grad * (2.5 * eps / 20) - x
            scale = (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-12).view(view)).clamp(max=1)
            adv = (x + delta * scale).clamp(0, 1)
        fooled = _predict(net, adv) != y
        hi_b = torch.where(fooled, eps.flatten(), hi_b)
        lo_b = torch.where(fooled, lo_b, eps.flatten())
    return hi_b


def test_trained_mlp_l2_no_worse_than_pgd_bisection() -> None:
    net, x, y = _trained_mlp()
    assert len(x) >= 50
    result = FMN(norm="l2", steps=100).run(net, x, y)
    fooled = _predict(net, result.adversarial) != y
    assert float(fooled.float().mean()) >= 0.95
    found = perturbation_norm(result.adversarial - x, "l2")
    with attack_mode(net):
        pgd = _pgd_l2_bisection(net, x, y)
    assert float(found[fooled].median()) <= float(pgd.median()) * 1.01
    assert not bool(result.zero_gradient.any())
    curve = robust_accuracy_curve(found.numpy(), fooled.numpy(), [0.0, 0.5, 1.0, 2.0, 8.0])
    assert curve[0] == 1.0 and curve[-1] <= 0.05
    assert all(a >= b for a, b in itertools.pairwise(curve))


def test_trained_mlp_linf_finds_adversarials() -> None:
    net, x, y = _trained_mlp()
    adv = create_attack("fmn:norm=linf,steps=50")(net, x, y)
    fooled = _predict(net, adv) != y
    assert float(fooled.float().mean()) >= 0.95
    size = perturbation_norm(adv - x, "linf")
    assert float(size[fooled].median()) < 0.3


def test_reproducible() -> None:
    net, x, y = _linear_problem(n=12)
    first = FMN(norm="linf", steps=20)(net, x, y)
    second = FMN(norm="linf", steps=20)(net, x, y)
    assert torch.equal(first, second)
    assert not FMN().random


def test_create_attack_spec() -> None:
    attack = create_attack("fmn:norm=linf,steps=50")
    assert isinstance(attack, FMN)
    assert (attack.norm, attack.steps, attack.eps) == ("linf", 50, None)
    assert attack.alpha_init == 1.0 and attack.alpha_final is None
    assert (attack.gamma_init, attack.gamma_final) == (0.05, 0.001)
    bounded = create_attack("fmn:eps=0.5")
    assert bounded.eps == 0.5 and bounded.norm == "l2"


@pytest.mark.parametrize(
    "params",
    [
        {"norm": "l1"},
        {"steps": 0},
        {"steps": 2.5},
        {"alpha_init": 0},
        {"alpha_init": -1.0},
        {"alpha_final": 0.0},
        {"alpha_init": math.inf},
        {"gamma_init": 1.0},
        {"gamma_final": -0.1},
        {"gamma_init": True},
        {"eps": -0.1},
        {"eps": math.nan},
    ],
)
def test_bad_parameters(params: dict[str, object]) -> None:
    with pytest.raises(InvalidParameterError):
        FMN(**params)  # type: ignore[arg-type]


def test_bad_parameters_lower_level() -> None:
    net, x, y = _linear_problem(n=2)
    with pytest.raises(InvalidParameterError):
        fmn_search(net, x, y, steps=0)
    with pytest.raises(InvalidParameterError):
        fmn_search(net, x, y, norm="l0")


def test_negative_margin() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert negative_margin(logits, torch.tensor([0, 0])).tolist() == [-1.0, 5.0]
