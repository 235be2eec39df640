"""Model grids: one entry per grid point (ablations, training levels) and their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robustlab.errors import ConfigError
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study


def test_grid_expands_architecture_switches_like_cavey_table_1() -> None:
    config = parse_config(
        {
            "name": "ablation",
            "dataset": {"name": "mnist-sample"},
            "models": [
                {
                    "name": "cavey",
                    "architecture": "cavey_mnist",
                    "epochs": [1],
                    "grid": {
                        "params.batch_norm": [True, False],
                        "params.activation": ["relu", "tanh"],
                    },
                }
            ],
        }
    )
    names = [m.name for m in config.models]
    assert names == [
        "cavey-batch_norm-true-activation-relu", "cavey-batch_norm-true-activation-tanh",
        "cavey-batch_norm-false-activation-relu", "cavey-batch_norm-false-activation-tanh",
    ]  # fmt: skip
    last = config.models[-1]
    assert last.params == {"batch_norm": False, "activation": "tanh"}
    assert last.sweep == {"params.batch_norm": False, "params.activation": "tanh"}


def test_grid_over_a_strategy_parameter_of_a_spec_string_strategy() -> None:
    config = parse_config(
        {
            "name": "levels",
            "dataset": {"name": "mnist-sample"},
            "models": [
                {
                    "name": "stab",
                    "architecture": "lin2022_cnn",
                    "strategy": "stability:alpha=0.1",
                    "grid": {"strategy.params.sigma": [0.02, 0.08]},
                }
            ],
        }
    )
    assert [(m.name, m.strategy.params) for m in config.models if m.strategy] == [
        ("stab-sigma-0.02", {"alpha": 0.1, "sigma": 0.02}),
        ("stab-sigma-0.08", {"alpha": 0.1, "sigma": 0.08}),
    ]


@pytest.mark.parametrize("grid", [{}, {"params.dropout": []}, {"params.dropout": 0.2}])
def test_bad_grids_are_refused(grid: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="grid"):
        parse_config(
            {
                "name": "bad",
                "dataset": {"name": "mnist-sample"},
                "models": [{"name": "m", "architecture": "lin2022_cnn", "grid": grid}],
            }
        )


@pytest.mark.slow
def test_training_level_figure_and_leaderboard_in_a_study(tmp_path: Path) -> None:
    noise = {"degradation": "gaussian_noise", "levels": [0.1]}
    study = {
        "name": "levels",
        "dataset": {"name": "mnist-sample", "train_limit": 400, "test_limit": 100},
        "models": [
            {
                "name": "natural",
                "architecture": "lin2022_cnn",
                "epochs": [1],
                "learning_rate": 0.003,
            },
            {
                "name": "const",
                "architecture": "lin2022_cnn",
                "epochs": [1],
                "learning_rate": 0.003,
                "strategy": {"name": "constant", "params": {"perturbation": noise}},
                "grid": {"strategy.params.perturbation.levels": [[0.1], [0.3]]},
            },
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.2, 0.4]}}],
        "batch_size": 100,
        "examples": 0,
    }
    result = run_study(parse_config(study), run_dir=tmp_path / "run", device="cpu")
    report = result.report_md.read_text()
    assert "## Accuracy vs training level" in report
    assert "## Defence leaderboard" in report
    assert report.index("## Defence leaderboard") < report.index("## Models")
    assert "const-levels-0.3-e1" in report
    assert (result.run_dir / "report_files" / "leaderboard-pareto.png").exists()
