from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack import ATTACKS, FGSM, PGD, create_attack, named_grid
from robustlab.errors import InvalidParameterError, ModelError, UnknownNameError
from robustlab.models import create_model
from robustlab.seeding import make_generator


def _linear(seed: int = 0, classes: int = 3, side: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(side * side, 16), nn.Tanh(), nn.Linear(16, classes)
    )


def _conv() -> nn.Module:
    torch.manual_seed(1)
    return create_model("lin2022_cnn").eval()


def _batch(
    n: int = 8, side: int = 6, classes: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_fgsm_equals_one_step_by_hand() -> None:
    model, (x, y) = _linear(), _batch()
    leaf = x.clone().requires_grad_(True)
    F.cross_entropy(model(leaf), y).backward()
    expected = (x + 0.1 * leaf.grad.sign()).clamp(0, 1)
    assert torch.equal(FGSM(eps=0.1)(model, x, y), expected)


def test_fgsm_l2_is_one_normalised_step() -> None:
    model, (x, y) = _linear(), _batch()
    leaf = x.clone().requires_grad_(True)
    F.cross_entropy(model(leaf), y, reduction="sum").backward()
    g = leaf.grad
    step = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = (x + 0.5 * step).clamp(0, 1)
    torch.testing.assert_close(FGSM(eps=0.5, norm="l2")(model, x, y), expected)


def test_pgd_one_step_without_random_start_is_fgsm() -> None:
    model, (x, y) = _linear(), _batch()
    pgd = PGD(eps=0.2, steps=1, step_size=0.2, random_start=False)
    assert torch.equal(pgd(model, x, y), FGSM(eps=0.2)(model, x, y))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("conv", [False, True])
def test_pgd_stays_in_the_ball_and_the_box(norm: str, conv: bool) -> None:
    model = _conv() if conv else _linear()
    side = 28 if conv else 6
    classes = 10 if conv else 3
    x, y = _batch(6, side, classes)
    eps = 0.3 if norm == "linf" else 2.0
    adv = PGD(eps=eps, norm=norm, steps=7)(model, x, y, make_generator(0))
    assert adv.shape == x.shape and adv.dtype == torch.float32 and adv.is_contiguous()
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-5).all())
    # the attack moves the images and raises the loss
    assert float(size.max()) > 0.5 * eps
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_pgd_is_deterministic_given_the_generator() -> None:
    model, (x, y) = _conv(), _batch(5, 28, 10)
    attack = PGD(eps=0.1, steps=3)
    first = attack(model, x, y, make_generator(7))
    assert torch.equal(first, attack(model, x, y, make_generator(7)))
    assert not torch.equal(first, attack(model, x, y, make_generator(8)))


def test_channels_last_changes_only_the_speed() -> None:
    model, (x, y) = _conv(), _batch(5, 28, 10)
    fast = PGD(eps=0.1, steps=3, random_start=False)(model, x, y)
    plain = PGD(eps=0.1, steps=3, random_start=False, channels_last=False)(model, x, y)
    # The same gradient signs except where a gradient is within rounding of zero.
    assert float((fast - plain).abs().gt(1e-6).float().mean()) < 0.01


def test_attack_restores_the_model() -> None:
    model = _conv().train()
    model.features[0].weight.requires_grad_(True)
    model.classifier[1].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch(4, 28, 10)
    PGD(eps=0.1, steps=2)(model, x, y, make_generator(0))
    assert model.training and all(m.training for m in model.modules())
    assert model.features[0].weight.requires_grad and not model.classifier[1].bias.requires_grad
    assert model.features[0].weight.is_contiguous()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_eps_zero_returns_the_input() -> None:
    model, (x, y) = _linear(), _batch()
    assert torch.equal(PGD(eps=0.0)(model, x, y), x)
    assert not PGD(eps=0.0).random


def test_default_step_size_follows_madry() -> None:
    assert PGD(eps=0.3, steps=40).step == pytest.approx(2.5 * 0.3 / 40)
    assert PGD(eps=0.3, rel_step_size=0.01 / 0.3).step == pytest.approx(0.01)
    assert PGD(eps=0.3, step_size=0.05).step == 0.05


def test_create_attack_from_spec() -> None:
    attack = create_attack("pgd:eps=0.3,steps=40,norm=linf")
    assert isinstance(attack, PGD) and attack.eps == 0.3 and attack.steps == 40
    assert create_attack("pgd:eps=0.3", steps=5).steps == 5
    assert ATTACKS.entry("pgd").severity == "eps"
    with pytest.raises(UnknownNameError, match="did you mean 'pgd'"):
        create_attack("pdg")
    with pytest.raises(UnknownNameError, match="parameter of attack 'fgsm'"):
        create_attack("fgsm:steps=3")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pgd:eps=-0.1", "eps must be a finite number >= 0"),
        ("pgd:eps=.nan", "not a finite number"),
        ("pgd:steps=0", "steps must be an integer >= 1"),
        ("pgd:steps=2.5", "steps must be an integer >= 1"),
        ("pgd:norm=l1", "norm must be one of linf, l2"),
        ("pgd:step_size=0", "step_size must be a finite number > 0"),
        ("pgd:step_size=0.1,rel_step_size=0.1", "at most one of step_size and rel_step_size"),
        ("pgd:restarts=0", "restarts must be an integer >= 1"),
        ("pgd:restarts=1.5", "restarts must be an integer >= 1"),
        ("pgd:restarts=true", "restarts must be an integer >= 1"),
        ("pgd:restarts=3,random_start=false", "restarts=3 needs random_start=true"),
        ("fgsm:eps=abc", "eps must be a number >= 0"),
    ],
)
def test_bad_parameters_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_attack(spec)


def test_bad_inputs_are_clear_errors() -> None:
    model, (x, y) = _linear(), _batch()
    attack = PGD(eps=0.1, steps=1)
    g = make_generator(0)
    with pytest.raises(InvalidParameterError, match="labels must lie in \\[0, 2\\]"):
        attack(model, x, y + 3, g)
    with pytest.raises(InvalidParameterError, match="labels must be integers"):
        attack(model, x, y.float(), g)
    with pytest.raises(InvalidParameterError, match="one entry per image"):
        attack(model, x, y[:3], g)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidParameterError, match="NaN"):
        attack(model, nan, y, g)
    with pytest.raises(InvalidParameterError, match="must lie in \\[0, 1\\]"):
        attack(model, x * 255, y, g)
    with pytest.raises(InvalidParameterError, match=r"pass a torch\.Generator"):
        attack(model, x, y)


class _BadShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(dim=1)


class _NaNLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * float("nan")


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.detach().flatten(1))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_BadShape(), "needs logits of shape \\(8, classes\\)"),
        (_NaNLogits(), "NaN logits"),
        (_Detached(), "does not depend differentiably on its input"),
    ],
)
def test_bad_models_are_clear_errors(model: nn.Module, message: str) -> None:
    x, y = _batch()
    with pytest.raises(ModelError, match=message):
        FGSM(eps=0.1)(model, x, y)


def test_empty_batch() -> None:
    x, y = _batch(0)
    result = PGD().run(_linear(), x, y, make_generator(0))
    assert result.adversarial.shape == x.shape
    assert result.zero_gradient.shape == result.vanishing_gradient.shape == (0,)


def test_eps_zero_takes_no_gradient_and_flags_nothing() -> None:
    model, (x, y) = _linear(), _batch()
    result = PGD(eps=0.0).run(model, x, y)
    assert not result.zero_gradient.any() and not result.vanishing_gradient.any()
    assert result.vanishing_gradient.shape == (len(x),)


def test_named_grids() -> None:
    assert named_grid("huang2021") == [
        0.0, 1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2, 1e-1, 3e-1, 5e-1
    ]  # fmt: skip
    assert named_grid("huang2021-steps") == [10, 30, 50, 70, 90]
    with pytest.raises(UnknownNameError, match="unknown attack grid 'huang'"):
        named_grid("huang")


# PGD restarts


def _threshold_model() -> nn.Module:
    """One pixel in, two logits: ``[0, x - 0.5]``; label 0 is lost exactly when ``x > 0.5``."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.0], [1.0]]))
        net[1].bias.copy_(torch.tensor([0.0, -0.5]))
    return net


def test_restart_keeps_the_first_success_and_attacks_only_the_survivors() -> None:
    # Two pixels at 0.45, eps 0.1, one tiny step up the loss (towards x > 0.5): whether a run
    # fools the model is decided by its random start alone, x + u + 0.001 > 0.5.
    model = _threshold_model()
    x, y = torch.full((2, 1, 1, 1), 0.45), torch.zeros(2, dtype=torch.long)
    eps, step = 0.1, 1e-3

    def by_hand(start: torch.Tensor) -> torch.Tensor:
        low, high = (x[:1] - eps).clamp(min=0), (x[:1] + eps).clamp(max=1)
        return torch.minimum(torch.maximum(x[:1] + start + step, low), high)

    # The draws, in order: both starts of the first run, then the second sample's restart.
    g = make_generator(5)
    first = torch.empty(2, 1, 1, 1).uniform_(-eps, eps, generator=g)
    second = torch.empty(1, 1, 1, 1).uniform_(-eps, eps, generator=g)
    assert float(first[0]) > 0.049 and float(first[1]) < 0.049 and float(second[0]) > 0.049
    expected = torch.cat([by_hand(first[0:1]), by_hand(second)])

    def attack(restarts: int) -> tuple[torch.Tensor, torch.Generator]:
        generator = make_generator(5)
        pgd = PGD(eps=eps, steps=1, step_size=step, restarts=restarts)
        return pgd(model, x, y, generator), generator

    once, _ = attack(1)
    with torch.no_grad():
        assert model(once).argmax(dim=1).tolist() == [1, 0]  # the second sample survives one start
    twice, _ = attack(2)
    torch.testing.assert_close(twice, expected, rtol=0, atol=1e-7)
    assert torch.equal(twice[0], once[0])  # the first success is kept
    with torch.no_grad():
        assert model(twice).argmax(dim=1).tolist() == [1, 1]
    # More restarts change nothing once every sample is fooled, and draw nothing more.
    many, generator = attack(5)
    assert torch.equal(many, twice)
    after = torch.empty(1).uniform_(generator=generator)
    assert torch.equal(after, torch.empty(1).uniform_(generator=g))


def test_a_survivor_gets_the_last_restart() -> None:
    # Far below the threshold, no start can fool the model: the result is the last run's.
    model = _threshold_model()
    x, y = torch.full((1, 1, 1, 1), 0.2), torch.zeros(1, dtype=torch.long)
    g = make_generator(0)
    starts = [torch.empty(1, 1, 1, 1).uniform_(-0.1, 0.1, generator=g) for _ in range(3)]
    adv = PGD(eps=0.1, steps=1, step_size=1e-3, restarts=3)(model, x, y, make_generator(0))
    torch.testing.assert_close(adv, (x + starts[2] + 1e-3).clamp(0.1, 0.3), rtol=0, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_never_raise_robust_accuracy_and_stay_in_the_ball(norm: str) -> None:
    model, (x, _) = _linear(seed=3), _batch(64, seed=2)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every clean image is classified correctly
    eps = 0.08 if norm == "linf" else 0.3
    # Two short steps: where the run ends depends on where it starts.
    single = PGD(eps=eps, norm=norm, steps=2, rel_step_size=0.25)(model, x, y, make_generator(0))
    multi = PGD(eps=eps, norm=norm, steps=2, rel_step_size=0.25, restarts=8)(
        model, x, y, make_generator(0)
    )
    with torch.no_grad():
        fooled_once = model(single).argmax(dim=1) != y
        fooled = model(multi).argmax(dim=1) != y
    # A real effect: some samples survive one start, and restarts fool some of them.
    assert 0 < int(fooled_once.sum()) < int(fooled.sum()) < len(x)
    assert bool(fooled[fooled_once].all())
    assert torch.equal(multi[fooled_once], single[fooled_once])
    delta = (multi - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-5).all())
    assert float(multi.min()) >= 0.0 and float(multi.max()) <= 1.0
