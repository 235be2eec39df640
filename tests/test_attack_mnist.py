"""Acceptance on a real MNIST model trained by the spine (slow: trains, then attacks)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack import PGD
from robustlab.data import load_dataset
from robustlab.seeding import make_generator
from robustlab.study.config import StudyConfig
from robustlab.study.runner import run_study
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe

pytestmark = pytest.mark.slow

RECIPE = {"architecture": "lin2022_cnn", "epochs": 3, "batch_size": 50, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def mnist_model(mnist_dir: Path, model_cache: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    dataset = load_dataset("mnist", data_dir=str(mnist_dir))
    recipe = TrainingRecipe(dataset="mnist", **RECIPE)  # type: ignore[arg-type]
    served = ModelCache(model_cache).get_or_train(recipe, dataset)
    x, y = next(dataset.test.batches(300))
    return served.model.eval(), x, y


def _plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Textbook L-inf PGD, written independently of robustlab: 40 steps of 2.5 * eps / 40."""
    alpha = 2.5 * eps / 40
    g = torch.Generator().manual_seed(123)
    adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(40):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def test_pgd_breaks_the_mnist_model_and_agrees_with_plain_pgd(
    mnist_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = mnist_model
    assert _accuracy(model, x, y) > 0.95
    ours = _accuracy(model, PGD(eps=0.3, steps=40)(model, x, y, make_generator(0)), y)
    assert ours <= 0.01
    theirs = _accuracy(model, _plain_pgd(model, x, y, 0.3), y)
    assert abs(ours - theirs) <= 0.005
    # where the attack does not saturate, both still agree
    ours = _accuracy(model, PGD(eps=0.1, steps=40)(model, x, y, make_generator(0)), y)
    theirs = _accuracy(model, _plain_pgd(model, x, y, 0.1), y)
    assert 0.1 < ours < 0.9 and abs(ours - theirs) <= 0.03


def test_median_filter_loses_its_oblivious_credit_and_the_report_says_so(
    mnist_model: tuple[nn.Module, torch.Tensor, torch.Tensor], mnist_dir: Path, tmp_path: Path
) -> None:
    # L2 PGD at eps 1.5: passed through a 3x3 median filter, examples made against the bare
    # model lose much of their effect (the oblivious credit); an attacker who differentiates
    # the median filter gets it all back.
    config = StudyConfig.model_validate(
        {
            "name": "median-adaptive",
            "dataset": {"name": "mnist", "test_limit": 500},
            "models": [
                {
                    "name": "cnn",
                    **{k: v for k, v in RECIPE.items() if k != "epochs"},
                    "epochs": [RECIPE["epochs"]],
                }
            ],
            "defenses": ["none", "median:size=3"],
            "batch_size": 250,
            "examples": 0,
            "attacks": [{"name": "pgd", "params": {"norm": "l2", "eps": 1.5}}],
            "output": str(tmp_path / "run"),
        }
    )
    result = run_study(config, data_dir=mnist_dir)
    with result.results_csv.open() as f:
        rows = {r["defense"]: float(r["accuracy"]) for r in csv.DictReader(f)
                if r["degradation"] == "pgd"}  # fmt: skip
    bare, oblivious, adaptive = (
        rows["none (oblivious)"],
        rows["median (oblivious)"],
        rows["median (adaptive)"],
    )
    assert oblivious - bare >= 0.05  # a clear credit
    assert adaptive - bare < 0.5 * (oblivious - bare)  # most of it lost
    report = result.report_md.read_text()
    assert (
        "**median loses" in report and "of the robustness the oblivious protocol credits" in report
    )
