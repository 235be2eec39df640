from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack import FGSM, PGD
from robustlab.attack.base import vanishing_gradient
from robustlab.attack.sanity import (
    accuracy_rises,
    count_unstable,
    large_eps,
    large_eps_survivors,
    unstable_predictions,
    vanishing_gradients,
    zero_gradients,
)
from robustlab.errors import InvalidParameterError


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


def _scaled_linear(scale: float) -> nn.Module:
    """Logits ``(+scale * sum(x), -scale * sum(x))``: class 0 wins by ``2 * scale * sum(x)``."""
    linear = nn.Linear(16, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[scale] * 16, [-scale] * 16]))
    return nn.Sequential(nn.Flatten(), linear)


def _bright_images(n: int = 6) -> torch.Tensor:
    return 0.4 + 0.2 * torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def test_vanishing_gradient_threshold_is_float32_precision() -> None:
    eps = torch.finfo(torch.float32).eps
    grad = torch.zeros(4, 1, 2, 2)
    grad[0, 0, 0, 0] = 1e-3  # healthy
    grad[1] = 0.26 * eps  # L1 norm 1.04 eps: just above the threshold
    grad[2] = 0.24 * eps  # L1 norm 0.96 eps: just below
    assert vanishing_gradient(grad).tolist() == [False, False, True, True]  # zero vanishes too


def test_vanishing_gradients_trip_on_a_large_fraction() -> None:
    assert vanishing_gradients(0, 100) is None and vanishing_gradients(9, 100) is None
    flag = vanishing_gradients(10, 100)
    assert flag is not None and flag.check == "vanishing-gradient"
    assert "10 of 100 samples (10%)" in flag.message and "logits" in flag.message
    assert vanishing_gradients(1, 100, min_fraction=0.01) is not None
    assert vanishing_gradients(0, 0) is None
    with pytest.raises(InvalidParameterError, match="min_fraction"):
        vanishing_gradients(1, 10, min_fraction=0.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_saturated_softmax_has_vanishing_but_not_zero_gradients(norm: str) -> None:
    x = _bright_images()
    y = torch.zeros(len(x), dtype=torch.long)
    eps = 0.1 if norm == "linf" else 0.4
    # margins 2 * 3 * sum(x) in about [38, 58]: p_1 ~ exp(-48) is tiny but not zero in float32
    saturated = PGD(eps=eps, norm=norm, steps=2).run(_scaled_linear(3.0), x, y, _gen())
    assert not saturated.zero_gradient.any() and saturated.vanishing_gradient.all()
    flag = vanishing_gradients(int(saturated.vanishing_gradient.sum()), len(x))
    assert flag is not None and f"{len(x)} of {len(x)}" in flag.message
    # the same model at a sane logit scale (margins about 1): nothing vanishes
    healthy = PGD(eps=eps, norm=norm, steps=2).run(_scaled_linear(0.05), x, y, _gen())
    assert not healthy.vanishing_gradient.any()
    assert vanishing_gradients(int(healthy.vanishing_gradient.sum()), len(x)) is None


def test_vanishing_gradients_are_measured_by_the_attack_not_by_the_model() -> None:
    # Exactly zero gradients (ReLU off) vanish too; nonzero but tiny ones vanish alone.
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(16, 2))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x[1] = 0.0
    result = PGD(eps=0.1, steps=1, random_start=False).run(model, x, torch.tensor([0, 1, 0]))
    assert result.zero_gradient.tolist() == [False, True, False]
    assert result.vanishing_gradient.tolist() == [False, True, False]


def test_l2_steps_keep_their_length_when_the_gradient_vanishes() -> None:
    # The L2 step is the gradient scaled to unit length; for a gradient of norm ~1e-19 a
    # normalisation by (norm + 1e-12) would shrink the step to nothing.
    x = _bright_images()
    y = torch.zeros(len(x), dtype=torch.long)
    model = _scaled_linear(3.0)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), y, reduction="sum"), leaf)
    assert 0 < float(grad.flatten(1).norm(dim=1).max()) < 1e-15
    adv = FGSM(eps=0.5, norm="l2")(model, x, y)
    moved = (adv - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, torch.full_like(moved, 0.5))
    # the step points down the loss gradient's direction: every pixel darker (lower sum(x))
    assert bool((adv < x).all())


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


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
