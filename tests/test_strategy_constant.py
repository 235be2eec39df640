"""``constant`` (cavey VI-A): every training image perturbed, levels drawn per image or batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.data import load_dataset
from robustlab.data.base import Dataset
from robustlab.degrade import create_degradation
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe
from robustlab.train.strategies.constant import Constant
from robustlab.train.strategy import StepContext, create_strategy

HOT = {"degradation": "hot_pixels", "levels": {"low": 1, "high": 10, "integer": True}}


class Recorder(nn.Module):
    """A linear classifier that keeps the batch it was last fed."""

    def __init__(self, features: int, classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.seen = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        logits: torch.Tensor = self.linear(x.flatten(1))
        return logits


def _fed(perturbation: dict[str, Any], x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The batch ``constant`` feeds the model for ``x`` (checking it counted every image)."""
    model = Recorder(x[0].numel())
    context = StepContext(0, 1, torch.Generator().manual_seed(seed), num_classes=10)
    Constant(perturbation).loss(model, x, torch.arange(len(x)) % 10, context)
    assert context.images == len(x) and model.seen.shape == x.shape
    return model.seen


def test_every_image_is_perturbed_at_a_level_drawn_per_image() -> None:
    # On a black image the number of hot pixels is the drawn level, exactly.
    counts = _fed(HOT, torch.zeros(300, 1, 8, 8)).flatten(1).eq(1.0).sum(dim=1)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 10  # all perturbed, in range
    assert len(set(counts.tolist())) == 10  # 300 draws hit every level of 1..10


def test_a_level_drawn_per_batch_is_shared_by_the_batch_and_varies_between_batches() -> None:
    per_batch = {**HOT, "draw": "per_batch"}
    levels = set()
    for seed in range(6):
        counts = _fed(per_batch, torch.zeros(50, 1, 8, 8), seed).flatten(1).eq(1.0).sum(dim=1)
        assert len(set(counts.tolist())) == 1, seed
        levels.add(int(counts[0]))
    assert levels <= set(range(1, 11)) and len(levels) > 1


def test_a_real_range_is_drawn_per_image_or_per_batch() -> None:
    noise = {"degradation": "gaussian_noise", "levels": {"low": 0.05, "high": 0.2}}
    x = torch.full((100, 1, 28, 28), 0.5)
    stds = (_fed(noise, x) - x).flatten(1).std(dim=1)
    assert float(stds.min()) > 0.05 * 0.9 and float(stds.max()) < 0.2 * 1.1
    assert float(stds.max() / stds.min()) > 2
    stds = (_fed({**noise, "draw": "per_batch"}, x) - x).flatten(1).std(dim=1)
    assert 0.05 * 0.9 < float(stds.mean()) < 0.2 * 1.1
    assert float(stds.max() / stds.min()) < 1.2  # one level, 784-pixel estimates agree


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({}, InvalidParameterError, "perturbation"),
        ({"perturbation": None}, InvalidParameterError, "perturbation is required"),
        ({"perturbation": {"degradation": "hot_pixels"}}, InvalidParameterError, "levels"),
        ({"perturbation": {"degradation": "nope", "levels": [1]}}, UnknownNameError, "nope"),
    ],
)
def test_bad_parameters_are_refused(
    params: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        create_strategy("constant", **params)


@pytest.mark.slow
def test_training_on_noise_improves_noisy_accuracy_over_standard(tmp_path: Path) -> None:
    full = load_dataset("mnist-sample")
    data = Dataset("mnist-sample", full.train.subset(1000), full.test.subset(500), full.classes)
    x, y = next(iter(data.test.batches(500)))
    noisy = create_degradation("gaussian_noise", sigma=0.4)(x, torch.Generator().manual_seed(1))
    cache = ModelCache(tmp_path)
    accuracy = {}
    for name, params in [
        ("standard", {}),
        ("constant", {"perturbation": {"degradation": "gaussian_noise", "levels": [0.4]}}),
    ]:
        recipe = TrainingRecipe(
            architecture="cavey_mnist",
            dataset="mnist-sample",
            epochs=2,
            batch_size=50,
            learning_rate=1e-3,
            strategy=name,
            strategy_params=params,
        )
        model = cache.get_or_train(recipe, data).model
        with torch.no_grad():
            accuracy[name] = {
                "clean": float((model(x).argmax(1) == y).float().mean()),
                "noisy": float((model(noisy).argmax(1) == y).float().mean()),
            }
    # Measured on this seed: standard 0.40 noisy (0.90 clean), constant 0.79 (0.83 clean).
    assert accuracy["constant"]["noisy"] > accuracy["standard"]["noisy"] + 0.15, accuracy
    assert accuracy["constant"]["clean"] > 0.6, accuracy  # it still learnt the digits
