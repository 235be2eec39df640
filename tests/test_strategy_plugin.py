"""A strategy registered from outside the package trains in a study with no change to the core.

The strategy below (label smoothing) lives in this test file only: registering it is all it
takes for the config, the planner, the artefact graph, the model cache, the CLI listing and the
report to use it. Nothing in ``study/``, ``report/`` or ``train/loop.py`` names a strategy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, load_builtin_strategies

CALLS: list[float] = []


class LabelSmoothing(Strategy):
    """Cross-entropy against labels smoothed by ``smoothing`` (Szegedy et al. 2016)."""

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = float(smoothing)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        context.images += len(x)
        CALLS.append(self.smoothing)
        return F.cross_entropy(model(x), y, label_smoothing=self.smoothing)


@pytest.fixture
def registered() -> Iterator[None]:
    load_builtin_strategies()
    STRATEGIES.register("label_smoothing_plugin", tags=("test",))(LabelSmoothing)
    try:
        yield
    finally:
        STRATEGIES._entries.pop("label_smoothing_plugin")


def test_an_outside_strategy_trains_through_a_study_and_is_listed(
    registered: None, tmp_path: Path
) -> None:
    CALLS.clear()
    study = {
        "name": "plugin",
        "dataset": {"name": "mnist-sample", "train_limit": 200, "test_limit": 100},
        "models": [
            {
                "name": "smooth",
                "architecture": "lin2022_cnn",
                "epochs": [1],
                "batch_size": 50,
                "learning_rate": 0.001,
                "strategy": {"name": "label_smoothing_plugin", "params": {"smoothing": 0.2}},
            }
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.2]}}],
        "examples": 0,
    }
    result = run_study(parse_config(study), run_dir=tmp_path / "run", device="cpu")
    assert CALLS == [0.2] * 4  # 200 images in batches of 50, one epoch
    card = json.loads((result.run_dir / "models.json").read_text())["smooth-e1"]["card"]
    assert card["strategy"] == "label_smoothing_plugin"
    assert card["strategy_params"] == {"smoothing": 0.2}
    assert card["images_seen"] == 200
    assert "label_smoothing_plugin(smoothing=0.2)" in result.report_md.read_text()

    listed = CliRunner().invoke(app, ["list", "strategies"])
    assert listed.exit_code == 0 and "label_smoothing_plugin" in listed.output


def test_an_unknown_strategy_is_refused_before_any_work() -> None:
    study = {
        "name": "plugin",
        "dataset": {"name": "mnist-sample"},
        "models": [{"name": "m", "architecture": "lin2022_cnn", "strategy": "no_such_strategy"}],
    }
    with pytest.raises(Exception, match="no_such_strategy"):
        parse_config(study)
