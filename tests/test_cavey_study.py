"""The shipped cavey-strategies study runs end to end, shrunk, and its strategies have an effect.

``configs/papers/cavey-strategies.yaml`` (MNIST study) with every model trained for 2 epochs on
1,500 digits of ``mnist-sample`` and tested on 300, one trial: the ten models of the reduced
default (natural; constant, incremental and transfer for pixels, noise and blur) train in graph
order, every cell is computed, the report carries the leaderboard and the paper-vs-ours
tables, and training on noise beats natural training on noisy digits.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from robustlab.study.config import parse_config
from robustlab.study.runner import run_study

CONFIG = Path(__file__).parents[1] / "src/robustlab/configs/papers/cavey-strategies.yaml"
EPOCHS = 2


def _shrunk_mnist_study() -> dict[str, Any]:
    study: dict[str, Any] = next(yaml.safe_load_all(CONFIG.read_text()))
    study["dataset"] = {"name": "mnist-sample", "train_limit": 1500, "test_limit": 300}
    study["trials"] = 1
    study["examples"] = 0
    study["baseline_model"] = f"natural-e{EPOCHS}"
    for model in study["models"]:
        model["epochs"] = [EPOCHS]
        if "parent" in model:
            model["parent"] = f"natural-e{EPOCHS}"
    # Reference rows name the full study's models; the shrunk study keeps the notes only.
    study["reference"] = {k: v for k, v in study["reference"].items() if k != "tables"}
    return study


@pytest.mark.slow
def test_shrunk_cavey_strategies_study_trains_every_strategy_and_noise_training_helps(
    tmp_path: Path,
) -> None:
    result = run_study(parse_config(_shrunk_mnist_study()), run_dir=tmp_path / "run", device="cpu")
    with result.results_csv.open() as f:
        rows = list(csv.DictReader(f))
    models = {r["model"] for r in rows}
    strategies = ("constant", "incremental", "transfer")
    families = ("pixels", "noise", "blur")
    expected = {f"{s}-{f}-e{EPOCHS}" for s in strategies for f in families}
    assert models >= expected | {f"natural-e{EPOCHS}"}

    def accuracy(model: str, degradation: str, severity: str) -> float:
        (row,) = [
            r
            for r in rows
            if r["model"] == model and r["degradation"] == degradation and r["severity"] == severity
        ]
        return float(row["accuracy"])

    natural = accuracy(f"natural-e{EPOCHS}", "gaussian_noise_variance", "0.1")
    for strategy in strategies:
        trained = accuracy(f"{strategy}-noise-e{EPOCHS}", "gaussian_noise_variance", "0.1")
        assert trained > natural + 0.05, (strategy, trained, natural)

    report = (result.run_dir / "report.md").read_text()
    assert "## Defence leaderboard" in report
    assert "transfer-noise-e2" in report and "parent" in report
