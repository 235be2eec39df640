"""Tests of the ensemble of classifiers (robustlab.models.ensemble)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.attack import PGD
from robustlab.errors import InvalidParameterError, ModelError
from robustlab.models.ensemble import VOTE_TIE_BREAK, Ensemble
from robustlab.seeding import make_generator


def _members(k: int = 5, classes: int = 4, seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, classes))
        for _ in range(k)
    ]


class _Fixed(nn.Module):
    """Returns the same logits for every image (a member whose decision is known)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) * self.scale + 0 * x.flatten(1).sum(1, keepdim=True)


def test_probability_output_is_the_log_of_the_mean_member_probability() -> None:
    members = _members()
    x = torch.rand(10, 1, 4, 4)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
        out = Ensemble(members)(x)
    torch.testing.assert_close(out.exp(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.softmax(dim=1), expected, rtol=1e-5, atol=1e-7)


def test_logit_output_is_the_mean_member_logit() -> None:
    members = _members()
    x = torch.rand(10, 1, 4, 4)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(dim=0)
        out = Ensemble(members, combine="logit")(x)
    torch.testing.assert_close(out, expected)


def test_vote_is_the_majority_and_ties_go_to_the_most_probable_class() -> None:
    # Votes: class 0, 0, 1, 1, 2 -> tie between 0 and 1; class 1 is held far more confidently.
    members = [
        _Fixed([1.0, 0.9, 0.0]),
        _Fixed([1.0, 0.9, 0.0]),
        _Fixed([0.0, 9.0, 0.0]),
        _Fixed([0.0, 9.0, 0.0]),
        _Fixed([0.0, 0.0, 1.0]),
    ]
    x = torch.rand(3, 1, 4, 4)
    assert Ensemble(members, combine="vote")(x).argmax(dim=1).tolist() == [1, 1, 1]
    # A clear majority wins even against a more confident minority.
    majority = [_Fixed([1.0, 0.0, 0.0])] * 3 + [_Fixed([0.0, 50.0, 0.0])] * 2
    ensemble = Ensemble(majority, combine="vote")
    assert ensemble(x).argmax(dim=1).tolist() == [0, 0, 0]
    assert Ensemble(majority)(x).argmax(dim=1).tolist() == [1, 1, 1]  # mean probability
    shares = ensemble(x).detach().exp()[0]
    assert float(shares[0]) == pytest.approx(0.6, abs=VOTE_TIE_BREAK)


def test_vote_breaks_a_tie_between_nearly_equally_probable_classes() -> None:
    # Two votes each for classes 0 and 1; class 1's mean probability is higher by about 1e-6,
    # which 1e-3 * p would add below float32's resolution of the log of a vote share.
    members = [_Fixed([1.0, 0.0, 0.0])] * 2 + [_Fixed([0.0, 1.00001, 0.0])] * 2
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
        assert float(mean[0, 1]) > float(mean[0, 0])
        assert Ensemble(members, combine="vote")(x).argmax(dim=1).tolist() == [1, 1]


def test_vote_against_an_independent_majority_on_random_members() -> None:
    members = _members(k=7, classes=5, seed=3)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decisions = torch.stack([m(x).argmax(dim=1) for m in members])  # (K, N)
        probability = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
        out = Ensemble(members, combine="vote")(x).argmax(dim=1)
    for i in range(len(x)):
        counts = torch.bincount(decisions[:, i], minlength=5)
        tied = (counts == counts.max()).nonzero().flatten()
        expected = tied[probability[i, tied].argmax()]
        assert int(out[i]) == int(expected)


def test_vote_gradient_is_that_of_the_members_mean_log_probability() -> None:
    members = _members()
    x = torch.rand(6, 1, 4, 4, requires_grad=True)
    out = Ensemble(members, combine="vote")(x)
    (vote_grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    mean_log = torch.stack([m(x).log_softmax(dim=1) for m in members]).mean(dim=0)
    (surrogate_grad,) = torch.autograd.grad(mean_log[:, 0].sum(), x)
    assert vote_grad.abs().sum() > 0
    torch.testing.assert_close(vote_grad, surrogate_grad)


def _centred_linear(k: int, classes: int, seed: int) -> list[nn.Module]:
    """Linear members whose boundaries all pass through the grey image (decisions vary)."""
    gen = torch.Generator().manual_seed(seed)
    members: list[nn.Module] = []
    for _ in range(k):
        linear = nn.Linear(16, classes)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(classes, 16, generator=gen))
            linear.bias.copy_(-linear.weight @ torch.full((16,), 0.5))
        members.append(nn.Sequential(nn.Flatten(), linear))
    return members


@pytest.mark.parametrize("combine", ["vote", "probability", "logit"])
def test_an_attack_through_an_ensemble_is_not_masked(combine: str) -> None:
    members = _centred_linear(k=5, classes=3, seed=5)
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    ensemble = Ensemble(members, combine=combine).eval()
    with torch.no_grad():
        y = ensemble(x).argmax(dim=1)
    result = PGD(eps=0.3, steps=20).run(ensemble, x, y, make_generator(0))
    assert not bool(result.zero_gradient.any())
    with torch.no_grad():
        fooled = ensemble(result.adversarial).argmax(dim=1) != y
    assert float(fooled.float().mean()) > 0.5


def test_bad_members_and_combinations_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="combine must be one of"):
        Ensemble(_members(), combine="median")
    with pytest.raises(InvalidParameterError, match="non-empty list"):
        Ensemble([])
    with pytest.raises(InvalidParameterError, match=r"member\(s\) \[1\]"):
        Ensemble([_members(1)[0], "net"])  # type: ignore[list-item]
    mixed = Ensemble([_members(1, classes=3)[0], _members(1, classes=4)[0]])
    with pytest.raises(ModelError, match="different output shapes"):
        mixed(torch.rand(2, 1, 4, 4))


def test_an_oblivious_attacker_sees_the_first_member() -> None:
    members = [nn.Linear(4, 3), nn.Linear(4, 3)]
    assert Ensemble(members).oblivious_source is members[0]
