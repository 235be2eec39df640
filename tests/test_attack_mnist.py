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


def _plain_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int
) -> torch.Tensor:
    """Textbook L-inf PGD, written independently of robustlab: 40 steps of 2.5 * eps / 40.

    The random start is drawn the way robustlab documents it (``uniform_(-eps, eps)`` over the
    batch in logical order from a CPU generator seeded with ``seed``), so that both
    implementations start from the same point and can be compared image by image.
    """
    alpha = 2.5 * eps / 40
    g = torch.Generator().manual_seed(seed)
    adv = (x + torch.empty(x.shape).uniform_(-eps, eps, generator=g)).clamp(0, 1)
    for _ in range(40):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def test_pgd_breaks_the_mnist_model(
    mnist_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = mnist_model
    assert _accuracy(model, x, y) > 0.95
    assert _accuracy(model, PGD(eps=0.3, steps=40)(model, x, y, make_generator(0)), y) <= 0.01


def test_pgd_agrees_with_plain_pgd_where_accuracy_is_far_from_0_and_100(
    mnist_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    # At eps 0.1 the model keeps about half the images (0.2-0.8 required), so agreement says
    # something; at eps 0.3 both attacks reach ~0% and would agree whatever they did.
    model, x, y = mnist_model
    eps, seed = 0.1, 0
    ours = PGD(eps=eps, steps=40)(model, x, y, make_generator(seed))
    theirs = _plain_pgd(model, x, y, eps, seed)
    accuracy = _accuracy(model, ours, y)
    assert 0.2 <= accuracy <= 0.8
    assert abs(accuracy - _accuracy(model, theirs, y)) <= 0.005
    # Same start, same steps: the same algorithm gives the same images, except at the rare
    # pixels where a gradient entry is within rounding of zero (channels-last convolutions,
    # a summed instead of a mean loss) and its sign differs. A different start or step size
    # changes about a quarter of all pixels.
    differ = (ours - theirs).abs() > 1e-6
    assert float(differ.float().mean()) < 1e-3
    assert int(differ.flatten(1).any(dim=1).sum()) <= 0.02 * len(x)


def test_adaptive_evaluation_of_median_and_jpeg_and_the_report_says_what_it_found(
    mnist_model: tuple[nn.Module, torch.Tensor, torch.Tensor], mnist_dir: Path, tmp_path: Path
) -> None:
    # L2 PGD at eps 1.5. Passed through a 3x3 median filter, examples made against the bare
    # model lose much of their effect (the oblivious credit); an attacker who differentiates
    # the median filter gets it all back. JPEG (BPDA) keeps most of its credit on MNIST
    # (robustlab.attack.adaptive documents the attacks tried); the report must say which.
    config = StudyConfig.model_validate(
        {
            "name": "median-jpeg-adaptive",
            "dataset": {"name": "mnist", "test_limit": 500},
            "models": [
                {
                    "name": "cnn",
                    **{k: v for k, v in RECIPE.items() if k != "epochs"},
                    "epochs": [RECIPE["epochs"]],
                }
            ],
            "defenses": ["none", "median:size=3", "jpeg:quality=50"],
            "batch_size": 250,
            "examples": 0,
            "attacks": [{"name": "pgd", "params": {"norm": "l2", "eps": 1.5}}],
            "output": str(tmp_path / "run"),
        }
    )
    result = run_study(config, data_dir=mnist_dir)
    with result.results_csv.open() as f:
        rows = {f"{r['defense']} ({r['protocol']})": float(r["accuracy"])
                for r in csv.DictReader(f) if r["degradation"] == "pgd"}  # fmt: skip
    bare = rows["none (oblivious)"]
    report = result.report_md.read_text()
    for defense in ("median", "jpeg"):
        oblivious, adaptive = rows[f"{defense} (oblivious)"], rows[f"{defense} (adaptive)"]
        assert oblivious - bare >= 0.05  # a clear credit
        kept = (adaptive - bare) / (oblivious - bare)
        if defense == "median":
            assert kept < 0.5  # most of it lost
        lost_most = f"**{defense} loses" in report
        assert lost_most == (kept < 0.5), (defense, kept)
        if not lost_most:
            assert f"**{defense}** keeps" in report and "did not remove that gain" in report
    assert "of the robustness the oblivious protocol credits" in report
