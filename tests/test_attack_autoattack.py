"""autoattack: the sequence runs on the points still robust, keeps the first success, and
switches to EOT for a random model."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack import PGD, create_attack
from robustlab.attack.adaptive import EOT
from robustlab.attack.autoattack import CLEAN_ERROR, ROBUST, AutoAttack
from robustlab.attack.base import Attack, AttackResult
from robustlab.errors import InvalidParameterError
from robustlab.seeding import make_generator


def _trained_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP on two Gaussian blobs per class in 16 dimensions (images 1x4x4)."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(4, 16, generator=gen) * 0.6 + 0.2
    y = torch.arange(400) % 4
    x = (centres[y] + 0.08 * torch.randn(400, 16, generator=gen)).clamp(0, 1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(x.view(-1, 1, 4, 4)), y).backward()
        opt.step()
    return net.eval(), x[:120].view(-1, 1, 4, 4), y[:120]


class _Recorder(Attack):
    """Wraps a component; records what it was given."""

    def __init__(self, inner: Attack, log: list[dict[str, Any]], name: str) -> None:
        self.inner, self.log, self.name = inner, log, name

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        with torch.no_grad():
            correct = (model(x).argmax(dim=1) == y).all().item()
        self.log.append({"name": self.name, "n": len(x), "model": model, "correct": correct})
        return self.inner.perturb(model, x, y, generator)


def _recording(attack: AutoAttack, log: list[dict[str, Any]]) -> None:
    original = attack.component

    def component(name: str, classes: int) -> Attack:
        return _Recorder(original(name, classes), log, name)

    attack.component = component  # type: ignore[method-assign]


def test_only_points_still_robust_are_attacked_and_first_success_kept() -> None:
    net, x, y = _trained_mlp()
    attack = AutoAttack(eps=0.08, steps=20, targets=3, queries=200)
    log: list[dict[str, Any]] = []
    _recording(attack, log)
    result = attack.run(net, x, y, make_generator(0))
    with torch.no_grad():
        clean_correct = net(x).argmax(dim=1) == y
        fooled = net(result.adversarial).argmax(dim=1) != y
    found = result.details["found_by"]
    assert [e["name"] for e in log] == ["apgd-ce", "apgd-t", "fab-t", "square"][: len(log)]
    # The first component sees exactly the clean-correct points; each later one only points
    # every earlier one failed on (still correctly classified when handed over).
    assert log[0]["n"] == int(clean_correct.sum())
    for earlier, later in itertools.pairwise(log):
        assert later["n"] <= earlier["n"]
    assert all(e["correct"] for e in log)
    counts = result.notes["fooled_by"]
    for i, entry in enumerate(log[:-1]):
        assert log[i + 1]["n"] == entry["n"] - counts[entry["name"]]
    # Per-sample bookkeeping: found_by says who fooled each point.
    assert ((found == CLEAN_ERROR) == ~clean_correct).all()
    assert ((found >= 0) == (fooled & clean_correct)).all()
    assert (result.adversarial[found == ROBUST] == x[found == ROBUST]).all()
    assert (result.adversarial - x).abs().max() <= 0.08 + 1e-6
    assert len(log) == 4 and all(counts[e["name"]] > 0 for e in log[:2])
    assert result.notes["version"] == "standard" and not result.notes["random_model"]


def test_at_least_as_strong_as_pgd_with_restarts() -> None:
    net, x, y = _trained_mlp()
    for eps in (0.08, 0.15):
        auto = AutoAttack(eps=eps, steps=30, targets=3, queries=300)(net, x, y, make_generator(1))
        pgd = PGD(eps=eps, steps=40, restarts=3)(net, x, y, make_generator(1))
        with torch.no_grad():
            auto_acc = (net(auto).argmax(dim=1) == y).float().mean().item()
            pgd_acc = (net(pgd).argmax(dim=1) == y).float().mean().item()
        assert auto_acc <= pgd_acc, (eps, auto_acc, pgd_acc)


class _NoisyNet(nn.Module):
    """A random defence: Gaussian noise on the input, drawn from the model's own generator."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.gen = torch.Generator().manual_seed(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.gen) * 0.05
        return self.net(x + noise)  # type: ignore[no-any-return]


def test_random_model_triggers_eot_and_the_rand_version() -> None:
    net, x, y = _trained_mlp()
    attack = AutoAttack(eps=0.15, steps=10, eot_samples=4)
    log: list[dict[str, Any]] = []
    _recording(attack, log)
    result = attack.run(_NoisyNet(net), x[:40], y[:40], make_generator(0))
    assert result.notes["random_model"] and result.notes["version"] == "rand"
    assert result.notes["eot_samples"] == 4
    assert log and [e["name"] for e in log] == ["apgd-ce", "apgd-dlr"][: len(log)]
    assert all(isinstance(e["model"], EOT) and e["model"].samples == 4 for e in log)


def test_an_eot_model_is_used_as_given() -> None:
    net, x, y = _trained_mlp()
    eot = EOT(_NoisyNet(net), 3)
    attack = AutoAttack(eps=0.15, steps=5)
    log: list[dict[str, Any]] = []
    _recording(attack, log)
    result = attack.run(eot, x[:20], y[:20], make_generator(0))
    assert result.notes["version"] == "rand" and result.notes["eot_samples"] == 3
    assert log and all(e["model"] is eot for e in log)


def test_deterministic_model_forced_rand_and_custom_sequence() -> None:
    net, x, y = _trained_mlp()
    result = AutoAttack(eps=0.1, steps=5, version="rand").run(
        net, x[:10], y[:10], make_generator(0)
    )
    assert result.notes["attacks"] == ["apgd-ce", "apgd-dlr"]
    custom = create_attack("autoattack:eps=0.1,steps=5,queries=50", attacks=["square", "apgd-ce"])
    result = custom.run(net, x[:10], y[:10], make_generator(0))
    assert result.notes["attacks"] == ["square", "apgd-ce"]


def test_reproducible() -> None:
    net, x, y = _trained_mlp()
    attack = AutoAttack(eps=0.1, steps=10, targets=2, queries=100)
    first = attack(net, x[:30], y[:30], make_generator(3))
    second = attack(net, x[:30], y[:30], make_generator(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "params",
    [{"version": "fast"}, {"attacks": ["apgd-x"]}, {"attacks": []}, {"steps": 0},
     {"targets": 0}, {"queries": -1}, {"eot_samples": 0}, {"eps": -1.0}, {"norm": "l1"}],
)  # fmt: skip
def test_bad_parameters(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError):
        AutoAttack(**params)


class _Quantised(nn.Module):
    """Gradient masking: the input is rounded to 4 grey levels (zero gradient everywhere)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)  # type: ignore[no-any-return]


def test_black_box_beating_white_box_is_flagged_with_the_masked_model() -> None:
    from robustlab.attack.evaluate import evaluate_attack
    from robustlab.data.base import Split

    net, x, y = _trained_mlp()
    split = Split((x * 255).round().to(torch.uint8), y)
    attack = AutoAttack(eps=0.25, steps=10, targets=2, queries=300)
    result = evaluate_attack(_Quantised(net), split, attack, seed=0)
    assert result.notes["fooled_by"]["square"] > 0
    checks = {flag.check for flag in result.flags}
    assert {"black-box-wins", "zero-gradient"} <= checks
    # The same evaluation of the unmasked model does not trip it.
    clean = evaluate_attack(net, split, attack, seed=0)
    assert "black-box-wins" not in {flag.check for flag in clean.flags}


def test_the_command_prints_what_the_ensemble_did(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from robustlab.cli import app
    from robustlab.models import ModelCard, create_model, save_model

    torch.manual_seed(0)
    card = ModelCard(architecture="lin2022_cnn", params={}, dataset="mnist-sample")
    path = save_model(create_model("lin2022_cnn"), card, tmp_path / "cnn")
    args = ["attack", "--model", str(path), "--data", "mnist-sample", "--limit", "8", "--attack",
            "autoattack:eps=0.1,steps=3,targets=2,queries=10", "--out", str(tmp_path / "a.npz")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ensemble: standard version; images fooled by apgd-ce" in result.output
