"""one_of: each image gets exactly one of the steps, uniformly, with shared overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlab.degrade import create_degradation
from robustlab.errors import InvalidParameterError
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.train.cache import ModelCache
from robustlab.train.perturbation import Perturbation


def test_each_image_gets_one_step_at_the_shared_level() -> None:
    mix = create_degradation("one_of", steps=["hot_pixels", "dead_pixels"], count=4)
    x = torch.full((2000, 1, 8, 8), 0.5)
    y = mix(x, torch.Generator().manual_seed(1))
    hot = (y == 1).flatten(1).sum(dim=1)
    dead = (y == 0).flatten(1).sum(dim=1)
    assert bool(((hot == 4) ^ (dead == 4)).all())  # exactly one kind, at count 4
    assert 0.45 < float((hot == 4).float().mean()) < 0.55  # uniform choice


def test_same_generator_same_images() -> None:
    mix = create_degradation("one_of", steps=["stuck_pixels", "hot_pixels"], count=2)
    x = torch.rand(16, 3, 8, 8)
    first = mix(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, mix(x, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(
    ("steps", "overrides", "message"),
    [
        (["hot_pixels"], {}, "at least two"),
        ("hot_pixels", {}, "at least two"),
        (["hot_pixels", "dead_pixels"], {"sigma": 1.0}, "no step takes it"),
    ],
)
def test_bad_mixtures_are_refused(steps: object, overrides: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_degradation("one_of", steps=steps, **overrides)


def test_training_levels_drive_every_step_of_a_mixture() -> None:
    p = Perturbation(
        "one_of",
        {"low": 1, "high": 10, "integer": True},
        parameter="count",
        params={"steps": ["hot_pixels", "dead_pixels", "stuck_pixels"]},
    )
    y = p.apply(torch.zeros(500, 1, 8, 8), torch.Generator().manual_seed(0))
    changed = (y != 0).flatten(1).sum(dim=1)
    assert int(changed.max()) <= 10 and int(changed.min()) == 0  # dead pixels on black: none


def test_a_mixture_without_a_grid_is_reported_with_its_examples(tmp_path: Path) -> None:
    """A mixed test set as is (no swept value) gets a report, examples included."""
    config = parse_config(
        {
            "name": "mixed",
            "dataset": {"name": "mnist-sample", "train_limit": 200, "test_limit": 50},
            "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
            "degradations": [
                {"name": "one_of", "label": "mixed", "params": {"steps": ["none", "salt_pepper"]}}
            ],
            "defenses": ["none", "median"],
            "examples": 2,
        }
    )
    result = run_study(config, run_dir=tmp_path / "run", cache=ModelCache(tmp_path / "c"))
    report = (result.run_dir / "report.md").read_text()
    assert "examples.png" in report and "mixed" in report
    assert "| defence | no noise | as configured |" in report
