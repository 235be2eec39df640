"""``augment`` (aghdam2016): each image plus K degraded copies, one forward pass, all counted."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.base import Split
from robustlab.degrade import create_degradation
from robustlab.errors import InvalidParameterError
from robustlab.train.loop import TrainingRecipe, train_epochs
from robustlab.train.strategies.augment import Augment
from robustlab.train.strategy import StepContext, create_strategy

SIGMAS = [5.0, 15.0, 25.0]  # 0-255 scale: std 0.0196, 0.0588, 0.098 on [0, 1]
FIXED = {"degradation": "gaussian_noise_255", "levels": SIGMAS}


class Recorder(nn.Module):
    """A linear classifier that keeps the batch it was last fed."""

    def __init__(self, features: int = 784, classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.seen = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        logits: torch.Tensor = self.linear(x.flatten(1))
        return logits


def _step(
    strategy: Augment, x: torch.Tensor, seed: int = 0
) -> tuple[Recorder, torch.Tensor, StepContext, torch.Tensor]:
    model = Recorder(x[0].numel())
    y = torch.arange(len(x)) % 10
    context = StepContext(0, 1, torch.Generator().manual_seed(seed), num_classes=10)
    loss = strategy.loss(model, x, y, context)
    return model, y, context, loss


def test_fixed_levels_give_one_copy_per_level_in_order_after_the_clean_batch() -> None:
    b = 6
    x = 0.4 + 0.2 * torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    model, y, context, loss = _step(Augment(FIXED), x)
    seen = model.seen
    assert seen.shape == ((1 + 3) * b, 1, 28, 28)
    assert context.images == (1 + 3) * b
    assert torch.equal(seen[:b], x)  # the clean block, untouched
    for k, sigma in enumerate(SIGMAS, start=1):
        noise = seen[k * b : (k + 1) * b] - x
        assert abs(float(noise.mean())) < 0.01
        assert float(noise.std()) == pytest.approx(sigma / 255, rel=0.05), k
    # One forward pass over the whole stack, labels repeated per block.
    expected = F.cross_entropy(model.linear(seen.flatten(1)), y.repeat(4))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_copy_k_is_the_registered_degradation_at_level_k_with_the_same_generator() -> None:
    # The copies are drawn in order, copy 1 first; with the CPU generator one normal draw of
    # K * B images equals K draws of B images when B*C*H*W is a multiple of 16 (28 * 28 is).
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    model, _, _, _ = _step(Augment(FIXED), x, seed=7)
    by_hand = torch.Generator().manual_seed(7)
    copies = [create_degradation("gaussian_noise_255", sigma=s)(x, by_hand) for s in SIGMAS]
    assert torch.equal(model.seen, torch.cat([x, *copies]))


def test_copies_of_a_non_noise_degradation_follow_the_listed_order() -> None:
    # salt_pepper replaces a fraction ``amount`` of pixels: the listed order is not sorted.
    b, amounts = 20, [0.5, 0.1, 0.3]
    x = torch.full((b, 1, 16, 16), 0.5)
    strategy = Augment({"degradation": "salt_pepper", "levels": amounts})
    model, _, context, _ = _step(strategy, x)
    assert context.images == 4 * b
    changed = (model.seen != 0.5).float().view(4, -1).mean(dim=1)
    assert float(changed[0]) == 0.0
    assert changed[1:].tolist() == pytest.approx(amounts, abs=0.03)


def test_a_range_needs_copies_and_draws_each_copys_level_per_image() -> None:
    noise = {"degradation": "gaussian_noise_255", "levels": {"low": 5, "high": 40}}
    with pytest.raises(InvalidParameterError, match="copies is required"):
        Augment(noise)
    b = 40
    x = torch.full((b, 1, 28, 28), 0.5)
    model, _, context, _ = _step(Augment(noise, copies=2), x)
    assert context.images == 3 * b
    stds = (model.seen[b:] - 0.5).flatten(1).std(dim=1) * 255  # per image, 0-255 scale
    assert float(stds.min()) > 5 * 0.85 and float(stds.max()) < 40 * 1.1
    assert float(stds.max()) / float(stds.min()) > 2  # levels vary across images

    per_batch = Augment({**noise, "draw": "per_batch"}, copies=2)
    model, _, _, _ = _step(per_batch, x, seed=3)
    stds = (model.seen[b:] - 0.5).flatten(1).std(dim=1).view(2, b) * 255
    # Within a copy one level (estimates agree to a few %), across copies two levels.
    assert (stds.max(dim=1).values / stds.min(dim=1).values < 1.2).all()
    assert float(stds[0].mean() / stds[1].mean()) != pytest.approx(1.0, abs=0.05)


def test_copies_with_a_list_draw_each_image_s_level_from_the_list() -> None:
    b = 30
    x = torch.full((b, 1, 28, 28), 0.5)
    strategy = Augment({"degradation": "gaussian_noise_255", "levels": [5, 30]}, copies=4)
    model, _, context, _ = _step(strategy, x)
    assert context.images == 5 * b
    stds = (model.seen[b:] - 0.5).flatten(1).std(dim=1) * 255
    low = (stds - 5).abs() < 5 * 0.15
    high = (stds - 30).abs() < 30 * 0.15
    assert bool((low | high).all()) and 0.2 < float(low.float().mean()) < 0.8


def test_without_clean_only_the_copies_are_trained_on() -> None:
    b = 5
    x = torch.full((b, 1, 28, 28), 0.5)
    model, _, context, _ = _step(Augment(FIXED, clean=False), x)
    assert model.seen.shape[0] == 3 * b and context.images == 3 * b
    noise = (model.seen - 0.5).view(3, -1).std(dim=1) * 255
    assert noise.tolist() == pytest.approx(SIGMAS, rel=0.05)


def test_the_training_loop_counts_the_copies() -> None:
    pixels = torch.randint(0, 255, (20, 1, 28, 28), dtype=torch.uint8)
    split = Split(pixels, torch.arange(20) % 10)
    recipe = TrainingRecipe(
        architecture="lin2022_cnn",
        dataset="toy",
        epochs=1,
        batch_size=10,
        strategy="augment",
        strategy_params={"perturbation": FIXED},
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    optimizer = torch.optim.Adam(model.parameters())
    seen = train_epochs(model, optimizer, split, recipe, start_epoch=0, end_epoch=1)
    assert seen == (1 + 3) * 20


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "perturbation"),
        ({"perturbation": None}, "perturbation is required"),
        ({"perturbation": FIXED, "copies": 0}, "copies must be an integer >= 1, got 0"),
        ({"perturbation": FIXED, "copies": True}, "copies must be an integer"),
        ({"perturbation": FIXED, "copies": 2.5}, "copies must be an integer"),
        ({"perturbation": FIXED, "clean": "yes"}, "clean must be true or false"),
    ],
)
def test_bad_parameters_are_refused_with_the_parameter_named(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_strategy("augment", **params)
