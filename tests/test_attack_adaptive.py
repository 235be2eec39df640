from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack import PGD
from robustlab.attack.adaptive import BPDA, EOT, attack_surface, bpda
from robustlab.attack.base import loss_gradient
from robustlab.defend import DEFENSES, JPEGDefense, create_defense, defended
from robustlab.degrade import create_degradation
from robustlab.errors import InvalidParameterError, ModelError
from robustlab.seeding import make_generator


def _images(n: int = 4, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def _classifier(side: int = 16, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, classes))


def test_jpeg_defence_is_the_jpeg_codec() -> None:
    assert "jpeg" in DEFENSES and DEFENSES.entry("jpeg").severity == "quality"
    x = _images()
    ours = create_defense("jpeg", quality=30)(x)
    assert torch.equal(ours, create_degradation("jpeg", quality=30)(x, torch.Generator()))
    assert not ours.requires_grad and JPEGDefense.differentiable is False
    with pytest.raises(InvalidParameterError, match="quality must be an integer"):
        create_defense("jpeg", quality=0)


def test_bpda_identity_passes_the_gradient_through() -> None:
    x = _images().requires_grad_(True)
    jpeg = create_defense("jpeg", quality=10)
    y = bpda(jpeg)(x)
    assert torch.equal(y, jpeg(x.detach()))  # the forward pass is the real defence, exactly
    weights = torch.randn_like(x)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    assert torch.equal(grad, weights)


def test_bpda_uses_the_approximation_in_the_backward_pass() -> None:
    x = _images().requires_grad_(True)
    jpeg = create_defense("jpeg", quality=10)
    box = create_defense("box", size=3)
    weights = torch.randn_like(x)
    (grad,) = torch.autograd.grad((BPDA(jpeg, box)(x) * weights).sum(), x)
    leaf = x.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad((box(leaf) * weights).sum(), leaf)
    torch.testing.assert_close(grad, expected)


def test_gradient_through_the_jpeg_defence_needs_bpda() -> None:
    model = defended(_classifier(), create_defense("jpeg", quality=50))
    with pytest.raises(ModelError, match=r"attack it through robustlab\.attack\.adaptive\.bpda"):
        loss_gradient(model, _images(), torch.tensor([0, 1, 2, 0]))


class _RandomShift(nn.Module):
    """A toy random defence: adds one uniform offset per image, drawn from its generator."""

    random = True

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = torch.rand(len(x), 1, 1, 1, generator=self.generator) * 0.5
        return (x + offset) ** 2


def test_eot_averages_the_gradient_over_draws() -> None:
    classifier = _classifier()
    x, y = _images(), torch.tensor([0, 1, 2, 0])
    eot = EOT(nn.Sequential(_RandomShift(3), classifier), samples=5)
    grad, _ = eot.loss_gradient(x, y)
    replay = nn.Sequential(_RandomShift(3), classifier)
    single = []
    for _ in range(5):
        leaf = x.clone().requires_grad_(True)
        F.cross_entropy(replay(leaf), y, reduction="sum").backward()
        single.append(leaf.grad)
    torch.testing.assert_close(grad, torch.stack(single).mean(dim=0))
    assert not torch.allclose(single[0], single[1])  # the draws differ
    with pytest.raises(InvalidParameterError, match="EOT samples"):
        EOT(replay, samples=0)


def test_attack_surface_chooses_the_gradient() -> None:
    classifier = _classifier()
    assert attack_surface(classifier, create_defense("none")).model is classifier
    median = attack_surface(classifier, create_defense("median"))
    assert median.method == "exact gradients"
    assert isinstance(median.model[0], type(create_defense("median")))
    jpeg = attack_surface(classifier, create_defense("jpeg"))
    assert isinstance(jpeg.model[0], BPDA) and jpeg.method.startswith("BPDA")
    forced = attack_surface(classifier, create_defense("median"), gradient="bpda")
    assert isinstance(forced.model[0], BPDA)
    random = attack_surface(classifier, _RandomShift(0), eot_samples=4)
    assert isinstance(random.model, EOT) and random.model.samples == 4
    assert "EOT over 4 draws" in random.method
    with pytest.raises(InvalidParameterError, match="not differentiable"):
        attack_surface(classifier, create_defense("jpeg"), gradient="exact")
    with pytest.raises(InvalidParameterError, match="gradient must be one of"):
        attack_surface(classifier, create_defense("median"), gradient="smooth")  # type: ignore[arg-type]


def test_adaptive_pgd_runs_through_bpda_and_eot() -> None:
    classifier = _classifier()
    x, y = _images(), torch.tensor([0, 1, 2, 0])
    for defense in (create_defense("jpeg", quality=50), _RandomShift(1)):
        surface = attack_surface(classifier, defense, eot_samples=2)
        adv = PGD(eps=0.1, steps=3)(surface.model, x, y, make_generator(0))
        assert float((adv - x).abs().max()) <= 0.1 + 1e-6
