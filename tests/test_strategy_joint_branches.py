"""``joint_branches``: one head per bin on a shared trunk, trained jointly, routed by a master."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import create_model
from robustlab.models.shared_trunk import Branch, SharedTrunkBranches
from robustlab.models.store import ModelCard, load_model, save_model
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.train.bins import DegradationBins
from robustlab.train.strategy import StepContext, create_strategy

NOISE = {"degradation": "gaussian_noise", "levels": [0.4]}
BLUR = {"degradation": "gaussian_blur", "levels": [1.5]}
BINS = [
    {"name": "clean"},
    {"name": "noisy", "degradations": [NOISE]},
    {"name": "blurred", "degradations": [BLUR]},
]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(),
        nn.Linear(16, 10),
    )  # fmt: skip


def _adapted(**params: Any) -> SharedTrunkBranches:
    network = create_strategy("joint_branches", bins=BINS, **params).adapt(_net())
    assert isinstance(network, SharedTrunkBranches)
    return network


def _context(seed: int) -> StepContext:
    return StepContext(
        epoch=0, total_epochs=1, generator=torch.Generator().manual_seed(seed), num_classes=10
    )


def _branch_copy(network: SharedTrunkBranches, k: int) -> nn.Module:
    """Branch k written out as a network of its own: the base with head k's weights loaded."""
    net = copy.deepcopy(network.base)
    if k > 0:
        for name, layer in zip(network.head_names, network.head_modules(k), strict=True):
            net.get_submodule(name).load_state_dict(layer.state_dict())
    return net


def test_branches_share_the_trunk_and_differ_in_their_heads() -> None:
    network = _adapted(layers=2)
    assert network.branches == 3
    with torch.no_grad():
        for p in network.heads.parameters():
            p.add_(torch.randn_like(p))
    x = torch.rand(5, 1, 8, 8)
    for k in range(3):
        torch.testing.assert_close(network.branch(x, k), _branch_copy(network, k)(x))
        torch.testing.assert_close(Branch(network, k)(x), network.branch(x, k))
    # The trunk's weights exist once: only the two head layers are repeated, per extra branch.
    keys = network.state_dict().keys()
    assert sum(k.startswith("base.0.") for k in keys) == 2  # the convolution, once
    assert sorted(k for k in keys if k.startswith("heads.")) == sorted(
        f"heads.{b}.{i}.{p}" for b in (0, 1) for i in (0, 1) for p in ("weight", "bias")
    )
    with pytest.raises(Exception, match="branch 3 does not exist"):
        network.branch(x, 3)


def test_each_image_is_scored_by_the_branch_of_its_bin() -> None:
    strategy = create_strategy("joint_branches", bins=BINS, layers=1)
    network = _adapted(layers=1)
    with torch.no_grad():
        for p in network.heads.parameters():
            p.add_(torch.randn_like(p))
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    context = _context(3)
    loss = strategy.loss(network, x, y, context)
    assert context.images == 12
    # Reference: the same draws, each image through a separate copy of its bin's branch.
    degraded, label = DegradationBins.from_spec(BINS).sample(x, torch.Generator().manual_seed(3))
    copies = [_branch_copy(network, k) for k in range(3)]
    want = torch.stack(
        [
            F.cross_entropy(copies[int(b)](degraded[i : i + 1]), y[i : i + 1])
            for i, b in enumerate(label)
        ]
    ).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()  # type: ignore[no-untyped-call]
    want.backward()  # type: ignore[no-untyped-call]
    for k in range(3):
        torch.testing.assert_close(
            network.head_parameters(k)[0].grad, copies[k].get_submodule("5").weight.grad
        )
    grads = [c.get_submodule("0").weight.grad for c in copies]
    want_trunk = torch.stack([g for g in grads if isinstance(g, torch.Tensor)]).sum(dim=0)
    torch.testing.assert_close(network.base.get_submodule("0").weight.grad, want_trunk)


def test_a_frozen_trunk_and_branch_one_keep_the_parents_weights() -> None:
    strategy = create_strategy("joint_branches", bins=BINS, layers=2, trunk="frozen")
    network = _adapted(layers=2, trunk="frozen")
    params = strategy.trainable(network)
    assert {id(p) for p in params} == {id(p) for p in network.heads.parameters()}
    before = {k: v.clone() for k, v in network.state_dict().items()}
    optimizer = torch.optim.SGD(params, lr=0.5)
    strategy.train_mode(network)
    loss = strategy.loss(network, torch.rand(30, 1, 8, 8), torch.arange(30) % 10, _context(0))
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    after = network.state_dict()
    for key, old in before.items():
        moved = not torch.equal(after[key], old)
        assert moved == key.startswith("heads."), key
    trained = create_strategy("joint_branches", bins=BINS, layers=2)
    assert len(trained.trainable(network)) == len(list(network.parameters()))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bins": BINS, "layers": 0}, "layers must be a whole number"),
        ({"bins": BINS, "trunk": "shared"}, "trunk must be one of"),
        ({"bins": BINS[:1]}, "at least two bins"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        create_strategy("joint_branches", **params)


def test_save_and_load_rebuild_every_branch(tmp_path: Path) -> None:
    card = ModelCard(
        architecture="lin2022_cnn", strategy="joint_branches",
        strategy_params={"bins": BINS, "layers": 2},
    )  # fmt: skip
    network = create_strategy("joint_branches", bins=BINS, layers=2).adapt(
        create_model("lin2022_cnn")
    )
    assert isinstance(network, SharedTrunkBranches)
    with torch.no_grad():
        for p in network.heads.parameters():
            p.add_(torch.randn_like(p))
    save_model(network, card, tmp_path / "slave")
    loaded = load_model(tmp_path / "slave")
    assert isinstance(loaded, SharedTrunkBranches)
    x = torch.rand(3, 1, 28, 28)
    network.eval()
    for k in range(3):
        torch.testing.assert_close(loaded.branch(x, k), network.branch(x, k))


def _study(tmp: Path, **ms: Any) -> dict[str, Any]:
    quick = {"learning_rate": 0.002, "batch_size": 50}
    bins = [{"name": "clean"}, {"name": "noisy", "degradations": [{
        "degradation": "gaussian_noise", "levels": {"low": 0.3, "high": 0.6}}]}]  # fmt: skip
    return {
        "name": "joint",
        "seed": 0,
        "dataset": {"name": "mnist-sample", "train_limit": 2000, "test_limit": 300},
        "models": [
            {"name": "base", "architecture": "lin2022_cnn", "epochs": [2], **quick},
            {
                "name": "master",
                "architecture": "ghosh2018_quality",
                "epochs": [1],
                "strategy": {"name": "quality", "params": {"bins": bins}},
                **quick,
            },
            {
                "name": "slave",
                "parent": "base-e2",
                "epochs": [2],
                "strategy": {"name": "joint_branches", "params": {"bins": bins, "layers": 2}},
                **quick,
            },
            {"name": "ms", "master_slave": {"master": "master", "branches": ["slave"], **ms}},
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.5]}}],
        "batch_size": 300,
        "examples": 0,
        "output": str(tmp / "run"),
    }


def test_the_config_counts_a_joint_network_as_all_its_branches(tmp_path: Path) -> None:
    parse_config(_study(tmp_path))  # one joint entry, two bins: two branches for two bins
    lone = _study(tmp_path)
    lone["models"][3] = {"name": "ams", "master_slave": {"branches": ["base-e2"]}}
    with pytest.raises(ConfigError, match="at least two branches"):
        parse_config(lone)
    other = _study(tmp_path)
    other["models"][2]["strategy"]["params"]["bins"] = [
        {"name": "clean"},
        {"name": "blurred", "degradations": [BLUR]},
    ]
    with pytest.raises(ConfigError, match="trained on the bins clean, blurred"):
        parse_config(other)


@pytest.mark.slow
def test_a_router_over_a_jointly_trained_slave_beats_the_base_on_noise(tmp_path: Path) -> None:
    result = run_study(parse_config(_study(tmp_path)))
    with result.results_csv.open() as f:
        rows = list(csv.DictReader(f))
    noisy = {r["model"]: float(r["accuracy"]) for r in rows if r["degradation"] == "gaussian_noise"}
    clean = {r["model"]: float(r["accuracy"]) for r in rows if r["degradation"] == "clean"}
    # The noisy branch learned noise on a trunk trained with it: the router gains on noise.
    assert noisy["ms"] > noisy["base-e2"] + 0.1, noisy
    assert clean["ms"] > clean["base-e2"] - 0.05, clean
    report = result.report_md.read_text()
    assert "slave-e2/noisy" in report and "joint_branches(bins=[clean, noisy]" in report
