"""``finetune``: only the last k Linear layers move, frozen parts stay in eval mode, 2B images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models import create_model
from robustlab.models.store import load_model
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe, make_optimizer
from robustlab.train.perturbation import Perturbation
from robustlab.train.strategy import StepContext, create_strategy

NOISE = {"degradation": "gaussian_noise", "levels": {"low": 0.1, "high": 0.3}}


class Small(nn.Module):
    """Three Linear layers behind a batch-normalised convolution, with dropout: 8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 16),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(16, 12),
            nn.ReLU(),
            nn.Linear(12, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


def _lin2022() -> nn.Module:
    return create_model("lin2022_cnn")


# (network, image side, k, the modules that must be trained: written out, not derived)
CASES: list[tuple[Callable[[], nn.Module], int, int, set[str]]] = [
    (_lin2022, 28, 1, {"classifier.4"}),
    (_lin2022, 28, 2, {"classifier.1", "classifier.4"}),
    (Small, 8, 1, {"classifier.6"}),
    (Small, 8, 2, {"classifier.4", "classifier.6"}),
    (Small, 8, 3, {"classifier.1", "classifier.4", "classifier.6"}),
]


def _context(seed: int = 0) -> StepContext:
    return StepContext(
        epoch=0, total_epochs=1, generator=torch.Generator().manual_seed(seed), num_classes=10
    )


@pytest.mark.parametrize(("factory", "side", "k", "trained"), CASES)
def test_a_training_step_moves_exactly_the_last_k_linear_layers(
    factory: Callable[[], nn.Module], side: int, k: int, trained: set[str]
) -> None:
    torch.manual_seed(0)
    model = factory()
    strategy = create_strategy("finetune", perturbation=NOISE, layers=k)
    model = strategy.adapt(model)
    # Buffers too: a training-mode forward pass would move Small's batch-norm statistics.
    before = {name: t.clone() for name, t in model.state_dict().items()}
    recipe = TrainingRecipe(
        architecture="lin2022_cnn",
        dataset="toy",
        learning_rate=1e-2,
        strategy="finetune",
        strategy_params={"perturbation": NOISE, "layers": k},
    )
    optimizer = make_optimizer(recipe, model, strategy)
    strategy.train_mode(model)
    x = torch.rand(6, 1, side, side, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    context = _context()
    loss = strategy.loss(model, x, y, context)
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()

    assert context.images == 12  # B clean + B degraded
    after = model.state_dict()
    for name, old in before.items():
        module = name.rpartition(".")[0]
        if module in trained:
            assert not torch.equal(after[name], old), f"{name} was not trained"
        else:
            # Parameters and buffers (batch-norm statistics) bit-for-bit unchanged.
            assert torch.equal(after[name], old), f"{name} changed"


def test_a_trained_trunk_moves_every_parameter_in_training_mode() -> None:
    torch.manual_seed(0)
    model = Small()
    strategy = create_strategy("finetune", perturbation=NOISE, layers=1, trunk="trained")
    params = strategy.trainable(model)
    assert len(params) == len(list(model.parameters()))
    assert {id(p) for p in params} == {id(p) for p in model.parameters()}
    # The head comes first (as with a frozen trunk), then the rest once each.
    assert params[0] is model.classifier[6].weight
    strategy.train_mode(model)
    assert all(m.training for m in model.modules())
    before = {name: t.clone() for name, t in model.named_parameters()}
    optimizer = torch.optim.SGD(params, lr=0.1)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    strategy.loss(model, x, torch.arange(6), _context()).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    for name, p in model.named_parameters():
        if name == "features.0.bias":  # batch norm subtracts it again: its gradient is zero
            continue
        assert not torch.equal(p, before[name]), f"{name} was not trained"
    with pytest.raises(InvalidParameterError, match="trunk must be one of frozen, trained"):
        create_strategy("finetune", perturbation=NOISE, trunk="shared")


def test_train_mode_keeps_frozen_layers_in_eval_mode() -> None:
    model = Small()
    create_strategy("finetune", perturbation=NOISE, layers=2).train_mode(model)
    training = {name for name, m in model.named_modules() if m.training}
    assert training == {"classifier.4", "classifier.6"}


@pytest.mark.parametrize(
    ("factory", "layers", "found"), [(_lin2022, 3, 2), (Small, 4, 3), (nn.Flatten, 1, 0)]
)
def test_more_layers_than_the_model_has_are_refused(
    factory: Callable[[], nn.Module], layers: int, found: int
) -> None:
    strategy = create_strategy("finetune", perturbation=NOISE, layers=layers)
    model = factory()
    message = f"layers={layers} but .* has only {found} nn.Linear"
    for call in (strategy.adapt, strategy.trainable, strategy.train_mode):
        with pytest.raises(InvalidParameterError, match=message):
            call(model)


def test_adapt_is_the_identity() -> None:
    model = Small()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert create_strategy("finetune", perturbation=NOISE, layers=3).adapt(model) is model
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class Recorder(nn.Module):
    """A fixed linear classifier that keeps the last batch it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.seen = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.linear(x.flatten(1))  # type: ignore[no-any-return]


def test_the_loss_is_cross_entropy_over_the_clean_batch_and_its_degraded_copies() -> None:
    model = Recorder()
    x = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 0, 1])
    context = StepContext(0, 1, torch.Generator().manual_seed(7), num_classes=3)
    loss = create_strategy("finetune", perturbation=NOISE).loss(model, x, y, context)

    degraded = Perturbation(**NOISE).apply(x, torch.Generator().manual_seed(7))
    assert not torch.equal(degraded, x)
    assert torch.equal(model.seen, torch.cat([x, degraded]))
    with torch.no_grad():
        logits = model.linear(model.seen.flatten(1)).double()
    labels = torch.cat([y, y])
    log_z = logits.exp().sum(dim=1).log()
    expected = -(logits[torch.arange(10), labels] - log_z).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-6)
    assert context.images == 10


def test_clean_false_trains_on_the_degraded_copies_only() -> None:
    model = Recorder()
    x = torch.rand(5, 1, 2, 2)
    context = StepContext(0, 1, torch.Generator().manual_seed(7), num_classes=3)
    create_strategy("finetune", perturbation=NOISE, clean=False).loss(
        model, x, torch.zeros(5, dtype=torch.long), context
    )
    assert context.images == 5
    assert torch.equal(model.seen, Perturbation(**NOISE).apply(x, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"perturbation": NOISE, "layers": 0}, "layers must be .* got 0"),
        ({"perturbation": NOISE, "layers": 1.5}, "layers must be .* got 1.5"),
        ({"perturbation": NOISE, "clean": "yes"}, "clean must be true or false"),
        ({"layers": 1}, "needs parameter 'perturbation'"),
        ({"perturbation": None}, "perturbation is required"),
        ({"perturbation": {"degradation": "gaussian_noise"}}, "degradation and levels"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_strategy("finetune", **params)


@pytest.mark.slow
def test_a_finetuned_child_keeps_its_parents_convolutions(tmp_path: Path) -> None:
    study = {
        "name": "finetune",
        "seed": 1,
        "dataset": {"name": "mnist-sample", "train_limit": 300, "test_limit": 100},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1], "learning_rate": 0.001},
            {
                "name": "fc8",
                "parent": "cnn-e1",
                "strategy": {"name": "finetune", "params": {"perturbation": NOISE}},
                "epochs": [1],
                "learning_rate": 0.001,
            },
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.3]}}],
        "batch_size": 100,
        "examples": 0,
    }
    result = run_study(
        parse_config(study),
        run_dir=tmp_path / "run",
        cache=ModelCache(tmp_path / "cache"),
        device="cpu",
    )
    models = json.loads((result.run_dir / "models.json").read_text())
    card = models["fc8-e1"]["card"]
    assert card["parents"]["start"]["id"] == "cnn-e1"
    assert card["images_seen"] == 600  # 300 clean images and 300 degraded copies

    parent = load_model(models["cnn-e1"]["path"])
    child = load_model(models["fc8-e1"]["path"])
    for index in (0, 3):  # the two convolutions
        assert torch.equal(parent.features[index].weight, child.features[index].weight)
        assert torch.equal(parent.features[index].bias, child.features[index].bias)
    assert torch.equal(parent.classifier[1].weight, child.classifier[1].weight)  # fc 1764->128
    assert not torch.equal(parent.classifier[4].weight, child.classifier[4].weight)  # output
