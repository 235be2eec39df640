"""Degradation bins and the quality strategy that trains ghosh2018's master on them."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.data.base import Split
from robustlab.errors import InvalidParameterError
from robustlab.models import create_model
from robustlab.train.bins import DegradationBins
from robustlab.train.loop import TrainingRecipe, build_model
from robustlab.train.strategy import StepContext, create_strategy

NOISE = {"degradation": "gaussian_noise", "levels": [0.3]}
BINS = [{"name": "clean"}, {"name": "noisy", "degradations": [NOISE]}]


def test_each_image_gets_the_degradation_of_its_bin() -> None:
    bins = DegradationBins.from_spec(BINS)
    x = torch.full((400, 1, 6, 6), 0.5)
    degraded, label = bins.sample(x, torch.Generator().manual_seed(1))
    changed = (degraded != x).flatten(1).any(dim=1)
    assert torch.equal(changed, label == 1)
    assert 150 < int((label == 1).sum()) < 250  # uniform over the two bins
    again, label_again = bins.sample(x, torch.Generator().manual_seed(1))
    assert torch.equal(again, degraded) and torch.equal(label_again, label)


def test_a_bin_may_hold_clean_images_beside_its_degradations() -> None:
    mixed = DegradationBins.from_spec(
        [{"name": "clean-or-mild", "degradations": [NOISE], "clean": True}, {"name": "other"}]
    ).bins[0]
    x = torch.full((300, 1, 6, 6), 0.5)
    changed = (mixed.apply(x, torch.Generator().manual_seed(0)) != x).flatten(1).any(dim=1)
    assert 100 < int(changed.sum()) < 200
    assert mixed.describe().endswith("or clean")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"name": "only"}], "at least two bins"),
        ([{"name": "a"}, {"name": "a"}], "distinct"),
        ([{"name": "a"}, {"name": "b", "colour": 1}], "unknown keys"),
        ([{"name": "a"}, {"name": "b", "clean": False}], "holds no images"),
        (
            [
                {"name": "a"},
                {"name": "b", "degradations": [{"degradation": "nope", "levels": [1]}]},
            ],
            "bin 'b'",
        ),
        ("clean, jpeg", "must be a list"),
    ],
)
def test_bad_bins_are_refused_with_the_bin_named(spec: Any, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        DegradationBins.from_spec(spec)


def test_quality_resizes_the_output_layer_and_learns_bins_not_labels() -> None:
    strategy = create_strategy("quality", bins=BINS)
    assert strategy.kind == "quality" and strategy.outputs(10) == 2
    recipe = TrainingRecipe(
        architecture="lin2022_cnn", dataset="toy", strategy="quality",
        strategy_params={"bins": BINS}, kind="quality",
    )  # fmt: skip
    net = build_model(recipe)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    # Training on one batch many times separates clean from noisy images whatever the labels.
    x = torch.rand(64, 1, 28, 28) * 0.2 + 0.4
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(60):
        context = StepContext(
            epoch=0, total_epochs=1, generator=torch.Generator().manual_seed(step), num_classes=2
        )
        loss = strategy.loss(net, x, torch.full((64,), 7), context)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert context.images == 64
    split = Split((x * 255).to(torch.uint8), torch.zeros(64, dtype=torch.long))
    assert strategy.score(net, split) > 0.9  # bin accuracy on a fixed draw


def test_recipe_kind_must_match_its_strategy() -> None:
    with pytest.raises(ValueError, match="trains a quality"):
        TrainingRecipe(
            architecture="lin2022_cnn", dataset="toy", strategy="quality",
            strategy_params={"bins": BINS},
        )  # fmt: skip
    assert create_model("ghosh2018_quality", num_classes=4)(torch.rand(1, 1, 28, 28)).shape == (
        1,
        4,
    )
