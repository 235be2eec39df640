"""The master-slave router: MS follows its master, AMS the most confident branch, honest gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.attack import PGD
from robustlab.errors import InvalidParameterError
from robustlab.models.master_slave import MasterSlave


class Constant(nn.Module):
    """Logits ``bias`` for every image, plus a small input-dependent term (for gradients)."""

    def __init__(self, bias: list[float]) -> None:
        super().__init__()
        self.bias = torch.tensor(bias)
        self.weight = nn.Parameter(torch.linspace(-1, 1, len(bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + x.flatten(1).mean(dim=1, keepdim=True) * self.weight


class Brightness(nn.Module):
    """A master: bin 0 for dark images, bin 1 for bright ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(dim=1)
        return torch.stack([(0.5 - m) * 20, (m - 0.5) * 20], dim=1)


def _images() -> torch.Tensor:
    return torch.cat([torch.full((3, 1, 4, 4), 0.1), torch.full((2, 1, 4, 4), 0.9)])


def test_ms_answers_with_the_branch_of_the_masters_bin() -> None:
    a, b = Constant([3.0, 0.0, 0.0]), Constant([0.0, 0.0, 3.0])
    router = MasterSlave([a, b], Brightness()).eval()
    x = _images()
    assert router.route(x).tolist() == [0, 0, 0, 1, 1]
    with torch.no_grad():
        out = router(x)
    assert out.argmax(dim=1).tolist() == [0, 0, 0, 2, 2]
    torch.testing.assert_close(out[:3], a(x[:3]).log_softmax(dim=1))
    torch.testing.assert_close(out[3:], b(x[3:]).log_softmax(dim=1))


def test_ams_picks_the_most_confident_branch_per_image() -> None:
    confident, unsure = Constant([4.0, 0.0, 0.0]), Constant([0.0, 1.0, 0.0])
    router = MasterSlave([unsure, confident])
    x = _images()
    assert router.decision == "max_confidence"
    assert router.route(x).tolist() == [1] * 5
    with torch.no_grad():
        torch.testing.assert_close(router(x), confident(x).log_softmax(dim=1))


def test_gradient_value_is_the_hard_decision_and_reaches_the_routing() -> None:
    """With gradients the value is unchanged; the gradient also moves the master's choice."""
    a, b = Constant([3.0, 0.0, 0.0]), Constant([0.0, 0.0, 3.0])
    master = Brightness()
    router = MasterSlave([a, b], master)
    x = _images().requires_grad_(True)
    out = router(x)
    with torch.no_grad():
        assert torch.equal(out, router(x.detach()))
    # The branches depend on x only weakly; the soft decision makes the loss depend on the
    # brightness the master reads, so the gradient is far from zero even where branches agree.
    loss = nn.functional.nll_loss(out, torch.zeros(5, dtype=torch.long))
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().sum() > 0
    hard_only = a(x[:3]).log_softmax(dim=1)
    (grad_hard,) = torch.autograd.grad(
        nn.functional.nll_loss(hard_only, torch.zeros(3, dtype=torch.long)), x
    )
    assert not torch.allclose(grad[:3], grad_hard[:3])


def test_router_refuses_fewer_than_two_branches_and_a_master_of_the_wrong_width() -> None:
    with pytest.raises(InvalidParameterError, match="at least two branches"):
        MasterSlave([Constant([1.0, 0.0])])
    router = MasterSlave([Constant([1.0, 0.0])] * 3, Brightness())
    # The same clear error with gradients (an attack), without them (inference) and routing.
    for call in (lambda x: router(x.requires_grad_(True)), router, router.route):
        with pytest.raises(InvalidParameterError, match="one logit per branch"):
            call(_images())
    # An empty batch: no image to route, the branches' width.
    with torch.no_grad():
        assert MasterSlave([Constant([1.0, 0.0])] * 2, Brightness())(_images()[:0]).shape == (0, 2)


def test_an_adaptive_attack_reroutes_a_saturated_master_to_the_weak_branch() -> None:
    """The master's switch hides the weak branch from the hard gradient, not from the surrogate.

    Dark images go to a branch that answers class 0 whatever the input (right for them, and
    no gradient at all); bright ones to a branch that answers class 2. The master is saturated
    (its weight on the other branch is about 1e-7), yet PGD through the soft switch brightens
    the images across the master's threshold and every one ends in the wrong branch, while the
    same attack on the branch alone (what an attacker unaware of the router sees) cannot move.
    """

    class SaturatedBrightness(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.flatten(1).mean(dim=1)
            return torch.stack([(0.5 - m) * 80, (m - 0.5) * 80], dim=1)

    right, wrong = Constant([6.0, 0.0, 0.0]), Constant([0.0, 0.0, 6.0])
    with torch.no_grad():
        right.weight.zero_()  # its answer does not depend on the input
    router = MasterSlave([right, wrong], SaturatedBrightness()).eval()
    x = torch.full((4, 1, 4, 4), 0.3)
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        assert (router(x).argmax(dim=1) == y).all()
    attack = PGD(eps=0.3, steps=10)
    adversarial = attack(router, x, y, torch.Generator().manual_seed(0))
    assert router.route(adversarial).tolist() == [1, 1, 1, 1]
    with torch.no_grad():
        assert (router(adversarial).argmax(dim=1) == 2).all()
    # Routing, not the branch, is where this router breaks: the branch alone gives nothing.
    transferred = attack(right, x, y, torch.Generator().manual_seed(0))
    assert router.route(transferred).tolist() == [0, 0, 0, 0]
    with torch.no_grad():
        assert (router(transferred).argmax(dim=1) == y).all()
