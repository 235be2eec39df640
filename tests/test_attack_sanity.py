from __future__ import annotations

import torch
from torch import nn

from robustlab.attack import PGD
from robustlab.attack.sanity import (
    accuracy_rises,
    count_unstable,
    large_eps,
    large_eps_survivors,
    unstable_predictions,
    zero_gradients,
)


def test_accuracy_rising_with_eps_trips() -> None:
    flag = accuracy_rises([0.0, 0.1, 0.2, 0.3], [0.99, 0.40, 0.10, 0.30])
    assert flag is not None and flag.check == "accuracy-rises"
    assert "0.1000 at eps=0.2 -> 0.3000 at eps=0.3" in flag.message
    # order of the points does not matter; small rises are within the tolerance
    assert accuracy_rises([0.3, 0.0, 0.1], [0.0, 0.99, 0.5]) is None
    assert accuracy_rises([0.0, 0.1, 0.2], [0.9, 0.300, 0.303]) is None
    assert accuracy_rises([10, 30], [0.2, 0.5], name="steps") is not None


def test_undefended_survivors_at_a_huge_budget_trip() -> None:
    assert large_eps("linf", 784) == 0.5 and large_eps("l2", 784) == 14.0
    flag = large_eps_survivors("linf", 0.5, 784, correct=3, total=100)
    assert flag is not None and flag.check == "large-eps" and "3 of 100" in flag.message
    assert large_eps_survivors("linf", 0.5, 784, correct=0, total=100) is None
    assert large_eps_survivors("linf", 0.3, 784, correct=50, total=100) is None
    assert large_eps_survivors("l2", 10.0, 784, correct=50, total=100) is None


def test_zero_gradients_trip() -> None:
    assert zero_gradients(0, 10) is None
    flag = zero_gradients(4, 10)
    assert flag is not None and flag.check == "zero-gradient" and "4 of 10" in flag.message


def test_zero_gradients_are_counted_by_the_attack() -> None:
    # A model whose output ignores one image's pixels (a ReLU that is off there) gives that
    # image an exactly zero gradient.
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(16, 2))
    x = torch.rand(3, 1, 4, 4)
    x[1] = 0.0  # ReLU'(0) = 0 everywhere in this image
    result = PGD(eps=0.1, steps=2, random_start=False).run(model, x, torch.tensor([0, 1, 0]))
    assert result.zero_gradient.tolist() == [False, True, False]


class _Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 4)
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) + 10 * torch.randn(len(x), 4, generator=self.generator)


def test_randomised_predictions_trip() -> None:
    x = torch.rand(50, 1, 4, 4)
    stable = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    assert count_unstable(stable, x) == 0 and unstable_predictions(0, 50) is None
    moved = count_unstable(_Noisy(), x, calls=3)
    assert moved > 10
    flag = unstable_predictions(moved, 50)
    assert flag is not None and flag.check == "randomness" and "EOT" in flag.message
