"""``incremental`` (cavey VI-B): the perturbed share grows from ``start`` to ``end`` by epoch."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.data.base import Dataset, Split
from robustlab.errors import InvalidParameterError
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe
from robustlab.train.strategies.incremental import Incremental
from robustlab.train.strategy import StepContext, create_strategy

# salt_pepper at amount 1 turns every pixel of a grey image to 0 or 1: a perturbed image is
# told from a clean one without doubt.
SALT = {"degradation": "salt_pepper", "levels": [1.0]}


def _shares(total: int, **params: Any) -> list[float]:
    strategy = Incremental(SALT, **params)
    return [strategy.share(e, total) for e in range(total)]


def test_linear_schedule_by_hand() -> None:
    # 0.05 + 0.95 * e / 4
    assert _shares(5) == pytest.approx([0.05, 0.2875, 0.525, 0.7625, 1.0])
    assert _shares(4, start=0.2, end=0.8) == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_exponential_schedule_by_hand() -> None:
    # 0.05 * 20 ** (e / 4): 20 ** 0.25 = 2.114743, 20 ** 0.5 = 4.472136, 20 ** 0.75 = 9.457416
    shares = _shares(5, schedule="exponential")
    assert shares == pytest.approx([0.05, 0.1057371, 0.2236068, 0.4728708, 1.0], rel=1e-6)
    ratios = [b / a for a, b in itertools.pairwise(shares)]
    assert ratios == pytest.approx([20**0.25] * 4)  # geometric


def test_step_schedule_by_hand() -> None:
    # 3 levels 0.05, 0.525, 1.0 over 10 epochs: blocks of 4, 3 and 3 epochs.
    assert _shares(10, schedule="step", steps=3) == pytest.approx(
        [0.05] * 4 + [0.525] * 3 + [1.0] * 3
    )
    # 5 levels over 10 epochs: two epochs each.
    levels = [0.05, 0.2875, 0.525, 0.7625, 1.0]
    assert _shares(10, schedule="step", steps=5) == pytest.approx(
        [s for s in levels for _ in range(2)]
    )
    # More steps than epochs: one level per epoch, from start to end.
    assert _shares(3, schedule="step", steps=5) == pytest.approx([0.05, 0.525, 1.0])


@pytest.mark.parametrize(
    "params", [{}, {"schedule": "exponential"}, {"schedule": "step", "steps": 4}, {"end": 0.6}]
)
def test_one_epoch_uses_the_end_share_and_the_last_epoch_ends_exactly(
    params: dict[str, Any],
) -> None:
    end = params.get("end", 1.0)
    assert _shares(1, **params) == [end]
    assert _shares(7, **params)[-1] == end  # exactly: 1.0 perturbs every image


@pytest.mark.parametrize("schedule", ["linear", "exponential"])
def test_the_measured_perturbed_fraction_follows_the_schedule(schedule: str) -> None:
    strategy = create_strategy("incremental", perturbation=SALT, schedule=schedule)
    assert isinstance(strategy, Incremental)
    n, total = 2000, 5
    x = torch.full((n, 1, 4, 4), 0.5)
    y = torch.arange(n) % 10
    fractions = []
    fed: list[torch.Tensor] = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    model.register_forward_hook(lambda _m, inputs, _out: fed.append(inputs[0].detach()))
    for epoch in range(total):
        fed.clear()
        context = StepContext(epoch, total, torch.Generator().manual_seed(epoch), num_classes=10)
        strategy.loss(model, x, y, context)
        assert context.images == n
        changed = (fed[0] != 0.5).flatten(1)
        perturbed = changed.all(dim=1)
        assert bool((perturbed | ~changed.any(dim=1)).all())  # whole images, clean or not
        fractions.append(float(perturbed.float().mean()))
        share = strategy.share(epoch, total)
        tolerance = 4 * math.sqrt(share * (1 - share) / n)  # 4 binomial standard errors
        assert abs(fractions[-1] - share) <= tolerance, (epoch, fractions[-1], share)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def _recipe(strategy: str, epochs: int, **params: Any) -> TrainingRecipe:
    return TrainingRecipe(
        architecture="cavey_mnist",
        dataset="toy",
        epochs=epochs,
        batch_size=10,
        strategy=strategy,
        strategy_params={"perturbation": SALT, **params},
    )


def test_lineage_and_cache_key_include_the_epochs() -> None:
    assert Incremental.depends_on_total_epochs is True
    short, long = _recipe("incremental", 10), _recipe("incremental", 30)
    assert short.lineage()["epochs"] == 10 and long.lineage()["epochs"] == 30
    assert ModelCache("unused").key(short, "fp") != ModelCache("unused").key(long, "fp")
    # Contrast: constant's epoch e does not depend on the total, its lengths share a lineage.
    assert "epochs" not in _recipe("constant", 10).lineage()
    assert ModelCache("unused").key(_recipe("constant", 10), "fp") == ModelCache("unused").key(
        _recipe("constant", 30), "fp"
    )


@pytest.mark.slow
def test_a_cached_shorter_training_is_never_continued(tmp_path: Path) -> None:
    pixels = torch.randint(0, 255, (10, 1, 28, 28), dtype=torch.uint8)
    split = Split(pixels, torch.arange(10))  # one batch: one step per epoch
    data = Dataset("toy", split, split, [str(i) for i in range(10)])
    cache = ModelCache(tmp_path)
    for strategy, retrained in [("incremental", 2), ("constant", 1)]:
        one = cache.get_or_train(_recipe(strategy, 1), data)
        two = cache.get_or_train(_recipe(strategy, 2), data)
        assert one.trained_epochs == 1
        assert two.trained_epochs == retrained, strategy  # constant continues from epoch 1
        assert (one.path.parent == two.path.parent) == (strategy == "constant")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"perturbation": None}, "perturbation is required"),
        ({"start": -0.1}, "start must be a share in"),
        ({"end": 1.5}, "end must be a share in"),
        ({"start": "0.1"}, "start must be a number"),
        ({"start": 0.6, "end": 0.4}, "start 0.6 exceeds end 0.4"),
        ({"schedule": "cosine"}, "schedule must be linear, exponential or step"),
        ({"schedule": "exponential", "start": 0.0}, "cannot grow from start 0"),
        ({"schedule": "step"}, "needs steps"),
        ({"schedule": "step", "steps": 1}, "needs steps, an integer >= 2, got 1"),
        ({"steps": 3}, r"steps \(3\) only applies to schedule: step"),
    ],
)
def test_bad_parameters_are_refused_with_the_parameter_named(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_strategy("incremental", **{"perturbation": SALT, **params})


def test_share_refuses_an_epoch_outside_the_training() -> None:
    with pytest.raises(InvalidParameterError, match=r"epoch 5 outside 0\.\.4"):
        Incremental(SALT).share(5, 5)
