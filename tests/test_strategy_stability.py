"""``stability``: CE(f(x), y) + alpha KL(P(y|x) || P(y|x')) against a hand computation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.data import load_dataset
from robustlab.errors import ConfigError, InvalidParameterError
from robustlab.study.config import parse_config
from robustlab.study.plan import plan_models
from robustlab.train.loop import TrainingRecipe, build_model, make_optimizer, train_epochs
from robustlab.train.strategies.stability import Stability
from robustlab.train.strategy import StepContext, create_strategy

WEIGHT = torch.tensor(
    [[1.0, -2.0, 0.5, 3.0], [-1.5, 0.5, 2.0, -1.0], [0.25, 1.0, -3.0, 2.0]], dtype=torch.float64
)
BIAS = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
# Pixels at and near the ends of [0, 1], so that sigma = 0.3 noise is clipped.
X = torch.tensor([[[[0.0, 0.95], [0.5, 1.0]]], [[[0.05, 0.3], [1.0, 0.7]]]])
Y = torch.tensor([0, 2])
SEED = 123


def _model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(WEIGHT)
        model[1].bias.copy_(BIAS)
    return model


def _context(seed: int = SEED) -> StepContext:
    return StepContext(0, 1, torch.Generator().manual_seed(seed), num_classes=3)


def _softmax(rows: list[list[float]]) -> list[list[float]]:
    out = []
    for row in rows:
        exps = [math.exp(v) for v in row]
        out.append([e / sum(exps) for e in exps])
    return out


def _logits(x: torch.Tensor) -> list[list[float]]:
    flat = x.double().flatten(1).tolist()
    weight, bias = WEIGHT.tolist(), BIAS.tolist()
    return [
        [sum(w * v for w, v in zip(weight[c], row, strict=True)) + bias[c] for c in range(3)]
        for row in flat
    ]


def _hand_loss(alpha: float, sigma: float) -> float:
    noise = torch.randn(X.shape, generator=torch.Generator().manual_seed(SEED))
    shifted = X + sigma * noise
    assert bool(((shifted < 0) | (shifted > 1)).any()), "the test should exercise the clip"
    noisy = shifted.clamp(0, 1)
    p = _softmax(_logits(X))
    q = _softmax(_logits(noisy))
    ce = -sum(math.log(p[n][int(Y[n])]) for n in range(2)) / 2
    kl = sum(p[n][j] * math.log(p[n][j] / q[n][j]) for n in range(2) for j in range(3)) / 2
    return ce + alpha * kl


def test_the_loss_is_clean_cross_entropy_plus_alpha_kl_to_the_noisy_copy() -> None:
    context = _context()
    loss = Stability(alpha=0.5, sigma=0.3).loss(_model(), X, Y, context)
    expected = _hand_loss(0.5, 0.3)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-5)
    assert expected - _hand_loss(0.0, 0.3) > 1e-3  # the KL term is not negligible here
    assert context.images == 4  # B clean + B noisy


def test_defaults_are_zhengs() -> None:
    strategy = create_strategy("stability")
    assert isinstance(strategy, Stability)
    assert (strategy.alpha, strategy.sigma, strategy.parent_role) == (0.01, 0.04, None)


def test_the_gradient_flows_through_both_branches() -> None:
    model = _model()
    Stability(alpha=0.5, sigma=0.3).loss(model, X, Y, _context()).backward()  # type: ignore[no-untyped-call]
    got = model[1].weight.grad
    assert got is not None

    def reference(detach_clean: bool) -> torch.Tensor:
        w = WEIGHT.clone().float().requires_grad_(True)
        noise = torch.randn(X.shape, generator=torch.Generator().manual_seed(SEED))
        clean = X.flatten(1) @ w.T + BIAS.float()
        noisy = (X + 0.3 * noise).clamp(0, 1).flatten(1) @ w.T + BIAS.float()
        p = clean.exp() / clean.exp().sum(1, keepdim=True)
        q = noisy.exp() / noisy.exp().sum(1, keepdim=True)
        p_kl = p.detach() if detach_clean else p
        ce = -p[torch.arange(2), Y].log().mean()
        loss = ce + 0.5 * (p_kl * (p_kl / q).log()).sum(1).mean()
        (grad,) = torch.autograd.grad(loss, w)
        return grad

    assert torch.allclose(got, reference(detach_clean=False), atol=1e-5)
    assert not torch.allclose(got, reference(detach_clean=True), atol=1e-3)


def test_alpha_zero_is_plain_cross_entropy() -> None:
    context = _context()
    loss = Stability(alpha=0.0).loss(_model(), X, Y, context)
    p = _softmax(_logits(X))
    expected = -(math.log(p[0][0]) + math.log(p[1][2])) / 2
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    assert context.images == 2


def test_the_noise_comes_from_the_context_generator() -> None:
    strategy = Stability(alpha=1.0, sigma=0.3)
    same = [float(strategy.loss(_model(), X, Y, _context(SEED)).detach()) for _ in range(2)]
    other = float(strategy.loss(_model(), X, Y, _context(SEED + 1)).detach())
    assert same[0] == same[1] != other


def _study(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "st",
        "dataset": {"name": "mnist-sample", "train_limit": 300, "test_limit": 100},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]},
            {
                "name": "st",
                "parent": "cnn-e1",
                "strategy": {"name": "stability", "params": params},
                "epochs": [1],
            },
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.3]}}],
    }


def test_from_parent_switches_the_parent_role() -> None:
    assert create_strategy("stability").parent_role is None
    assert create_strategy("stability", from_parent=True).parent_role == "start"
    # The study layer sees the per-instance role: a parent is required or refused.
    models = plan_models(parse_config(_study({"from_parent": True})))
    assert [m.id for m in models] == ["cnn-e1", "st-e1"]
    assert models[1].recipe is not None and models[1].recipe.architecture == "lin2022_cnn"
    with pytest.raises(ConfigError, match="trains from scratch"):
        parse_config(_study({"from_parent": False}))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -0.1}, "alpha must be finite and >= 0"),
        ({"alpha": float("nan")}, "alpha must be finite"),
        ({"alpha": "big"}, "alpha must be a number"),
        ({"sigma": 0}, "sigma must be finite and > 0"),
        ({"sigma": float("inf")}, "sigma must be finite and > 0"),
        ({"from_parent": "yes"}, "from_parent must be true or false"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_strategy("stability", **params)


@pytest.mark.slow
def test_a_lin2022_cnn_trains_one_epoch_with_finite_losses() -> None:
    data = load_dataset("mnist-sample")
    train = data.train.subset(300)
    recipe = TrainingRecipe(
        architecture="lin2022_cnn",
        dataset="mnist-sample",
        epochs=1,
        batch_size=100,
        learning_rate=1e-3,
        strategy="stability",
        strategy_params={"alpha": 0.1},
    )
    losses: list[float] = []

    class Recording(Stability):
        def loss(
            self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
        ) -> torch.Tensor:
            loss = super().loss(model, x, y, context)
            losses.append(float(loss.detach()))
            return loss

    strategy = Recording(alpha=0.1)
    model = build_model(recipe)
    before = [p.detach().clone() for p in model.parameters()]
    seen = train_epochs(
        model,
        make_optimizer(recipe, model, strategy),
        train,
        recipe,
        start_epoch=0,
        end_epoch=1,
        num_classes=10,
        strategy=strategy,
    )
    assert seen == 600  # 300 clean images and their 300 noisy copies
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
