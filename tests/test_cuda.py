"""Every piece on CUDA, with the data kept on the device; skipped where there is no GPU.

Random pieces draw from a CUDA generator, whose stream differs from the CPU's, so they are
checked for their contract (device, shape, dtype, range, reproducibility from the same seed);
deterministic pieces are compared with their CPU result. ``ROBUSTLAB_TEST_DEVICE=cpu pytest
tests/test_cuda.py`` runs the same checks on the CPU (to check the checks where no GPU is).
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.attack import ATTACKS, create_attack
from robustlab.data.datasets import load_dataset
from robustlab.defend import DEFENSES, DenoiserDefense, create_defense
from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.models import create_model
from robustlab.seeding import make_generator
from robustlab.study.config import StudyConfig
from robustlab.study.runner import run_study
from robustlab.train.cache import ModelCache
from robustlab.train.strategy import STRATEGIES, load_builtin_strategies

DEVICE = torch.device(os.environ.get("ROBUSTLAB_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)
# Codecs run on the CPU by design (libjpeg, OpenJPEG); composites need steps.
_SKIP_DEGRADATIONS = {"jpeg", "jpeg2000", "compose", "one_of"}


@functools.cache
def _test_split() -> Any:
    return load_dataset("mnist-sample").test


def _batch(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    test = _test_split()
    return test.images[:64].float().div(255).to(device), test.labels[:64].long().to(device)


@pytest.mark.parametrize("name", [e.name for e in DEGRADATIONS if e.name not in _SKIP_DEGRADATIONS])
def test_degradation_runs_on_the_device(name: str) -> None:
    x, _ = _batch(DEVICE)
    degradation = create_degradation(name)
    first = degradation(x, make_generator(7, DEVICE))
    again = degradation(x, make_generator(7, DEVICE))
    assert first.device.type == DEVICE.type and first.dtype == torch.float32
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again)
    if not getattr(degradation, "random", True):
        cpu = degradation(x.cpu(), make_generator(7))
        torch.testing.assert_close(first.cpu(), cpu, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [e.name for e in DEFENSES])
def test_defence_on_the_device_matches_the_cpu(name: str) -> None:
    x, _ = _batch(DEVICE)
    if name == "denoiser":  # a trained network: one built here stands for a saved one
        torch.manual_seed(0)
        network = create_model("huang2021_denoiser", in_channels=1, image_size=28, width=4)
        defence: torch.nn.Module = DenoiserDefense(network)
    else:
        defence = create_defense(name)
    out = defence.to(DEVICE)(x)
    assert out.device.type == DEVICE.type and out.shape == x.shape
    torch.testing.assert_close(out.cpu(), defence.cpu()(x.cpu()), atol=1e-4, rtol=0)


def _model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lin2022_cnn").to(device).eval()


_ATTACK_PARAMS: dict[str, dict[str, Any]] = {
    "autoattack": {"eps": 0.1, "version": "standard", "steps": 5, "square_queries": 50},
    "ga": {"eps": 0.3},
    "szegedy": {},
    "square": {"eps": 0.1, "queries": 50},
    "fmn": {"steps": 10},
    "fab": {"steps": 10},
}


@pytest.mark.parametrize("name", [e.name for e in ATTACKS])
def test_attack_runs_on_the_device(name: str) -> None:
    x, y = _batch(DEVICE)
    params = _ATTACK_PARAMS.get(name, {"eps": 0.1})
    entry = ATTACKS.entry(name)
    params = {k: v for k, v in params.items() if k in entry.parameter_names or entry.open_keywords}
    attack = create_attack(name, **params)
    result = attack.run(_model(DEVICE), x, y, make_generator(0, DEVICE))
    assert result.adversarial.device.type == DEVICE.type
    assert result.adversarial.shape == x.shape
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1


def test_fgsm_on_the_device_matches_the_cpu() -> None:
    x, y = _batch()
    attack = create_attack("fgsm", eps=0.1)
    cpu = attack(_model(torch.device("cpu")), x, y)
    gpu = attack(_model(DEVICE), x.to(DEVICE), y.to(DEVICE)).cpu()
    # A sign step: pixels may differ where the gradient is ~0 on one device and not the other.
    assert (cpu - gpu).abs().gt(1e-4).float().mean() < 0.01


_NOISE = {"degradation": "gaussian_noise", "levels": [0.3]}
_LEVELS = {"degradation": "gaussian_noise", "levels": [0.1, 0.3]}
_BINS = [{"name": "clean"}, {"name": "noisy", "degradations": [_NOISE]}]
_TINY_UNET = {"in_channels": 1, "image_size": 28, "width": 4}
# One entry per built-in strategy, trained for an epoch (two for AdvFilter's two stages).
_STRATEGY_MODELS: list[dict[str, Any]] = [
    {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]},
    {
        "name": "constant", "architecture": "lin2022_cnn", "epochs": [1],
        "strategy": {"name": "constant", "params": {"perturbation": _LEVELS}},
    },
    {
        "name": "incr", "architecture": "lin2022_cnn", "epochs": [1],
        "strategy": {"name": "incremental", "params": {"perturbation": _LEVELS}},
    },
    {
        "name": "augment", "architecture": "lin2022_cnn", "epochs": [1],
        "strategy": {"name": "augment", "params": {"perturbation": _LEVELS}},
    },
    {"name": "stab", "architecture": "lin2022_cnn", "epochs": [1], "strategy": "stability"},
    {
        "name": "adv", "architecture": "lin2022_cnn", "epochs": [1],
        "strategy": {"name": "adversarial", "params": {"attack": "pgd:eps=0.3,steps=2"}},
    },
    {"name": "tl", "parent": "cnn-e1", "strategy": "transfer", "epochs": [1]},
    {
        "name": "ft", "parent": "cnn-e1", "epochs": [1],
        "strategy": {"name": "finetune", "params": {"perturbation": _LEVELS}},
    },
    {
        "name": "q", "architecture": "lin2022_cnn", "epochs": [1],
        "strategy": {"name": "quality", "params": {"bins": _BINS}},
    },
    {
        "name": "joint", "parent": "cnn-e1", "epochs": [1],
        "strategy": {"name": "joint_branches", "params": {"bins": _BINS}},
    },
    {
        "name": "dn", "architecture": "huang2021_denoiser", "params": _TINY_UNET,
        "parent": "cnn-e1", "epochs": [1],
        "strategy": {"name": "denoise", "params": {"images": 64, "strengths": [0.1]}},
    },
    {
        "name": "af", "architecture": "huang2021_advfilter", "params": _TINY_UNET,
        "parent": "cnn-e1", "epochs": [2],
        "strategy": {
            "name": "advfilter",
            "params": {"images": 64, "ynet_epochs": 1, "sl_strengths": [0.1],
                       "m_strengths": [0.3]},
        },
    },
    # Quality networks and denoisers are trained when a composite uses them.
    {"name": "ms", "master_slave": {"master": "q-e1", "branches": ["cnn-e1", "constant-e1"]}},
    {"name": "cnn-dn", "denoised": {"denoiser": "dn-e1", "model": "cnn-e1"}},
    {"name": "cnn-af", "denoised": {"denoiser": "af-e2", "model": "cnn-e1"}},
]  # fmt: skip


def test_every_strategy_trains_on_the_device(tmp_path: Path) -> None:
    load_builtin_strategies()
    trained = [m for m in _STRATEGY_MODELS if "epochs" in m]
    covered = {_strategy_name(m) for m in trained}
    assert covered >= {e.name for e in STRATEGIES if "test" not in e.tags}
    study = StudyConfig.model_validate(
        {
            "name": "strategies-on-device",
            "dataset": {"name": "mnist-sample", "train_limit": 300, "test_limit": 100},
            "models": _STRATEGY_MODELS,
        }
    )
    result = run_study(
        study, run_dir=tmp_path / "run", cache=ModelCache(tmp_path / "cache"), device=str(DEVICE)
    )
    assert len(result.trained) == len(trained)


def _strategy_name(model: dict[str, Any]) -> str:
    strategy = model.get("strategy", "standard")
    return str(strategy if isinstance(strategy, str) else strategy["name"])


def test_a_study_on_the_device_matches_the_cpu(tmp_path: Path) -> None:
    study = StudyConfig.model_validate(
        {
            "name": "on-device",
            "dataset": {"name": "mnist-sample", "train_limit": 1000, "test_limit": 500},
            "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [2]}],
            "degradations": [{"name": "gaussian_blur", "grid": {"sigma": [1.0]}}],
            "defenses": ["none", "median"],
            "attacks": [{"name": "fgsm", "grid": {"eps": [0.1]}}],
        }
    )
    runs = {}
    for device in ("cpu", str(DEVICE)):
        result = run_study(
            study,
            run_dir=tmp_path / device,
            cache=ModelCache(tmp_path / f"cache-{device}"),
            device=device,
        )
        with result.results_csv.open() as f:
            rows = list(csv.DictReader(f))
        key = ("kind", "model", "defense", "protocol", "degradation")
        runs[device] = {tuple(r[k] for k in key): float(r["accuracy"]) for r in rows}
    cpu, other = runs["cpu"], runs[str(DEVICE)]
    assert cpu.keys() == other.keys()
    for cell, accuracy in cpu.items():
        assert abs(accuracy - other[cell]) < 0.03, cell
