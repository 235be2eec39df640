"""The per-dataset presets: they validate, and each model fits its dataset's images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlab.models.external import probe_model
from robustlab.study.config import load_configs
from robustlab.study.plan import make_plan
from robustlab.train.loop import build_model

PRESETS = Path(__file__).resolve().parents[1] / "src" / "robustlab" / "configs" / "presets"

# dataset -> (image shape, classes) of the loader, checked here without the data
SHAPES = {
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "svhn": ((3, 32, 32), 10),
    "gtsrb": ((3, 48, 48), 43),
}


def test_every_dataset_has_a_preset() -> None:
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == sorted(SHAPES)


@pytest.mark.parametrize("dataset", sorted(SHAPES))
def test_preset_loads_and_its_model_fits_the_data(dataset: str) -> None:
    (config,) = load_configs(PRESETS / f"{dataset}.yaml")
    assert config.dataset.name == dataset
    assert config.name == f"preset-{dataset}"
    assert len(config.degradations) >= 4 and {d.name for d in config.defenses} >= {"none"}
    shape, classes = SHAPES[dataset]
    for planned in make_plan(config, "fingerprint").models:
        assert planned.recipe is not None
        torch.manual_seed(0)
        probe_model(build_model(planned.recipe), shape, classes)


@pytest.mark.parametrize("dataset", sorted(SHAPES))
def test_preset_header_states_expectations(dataset: str) -> None:
    header = (PRESETS / f"{dataset}.yaml").read_text().split("\nname:")[0]
    for phrase in ("Expected clean accuracy", "2 CPU cores", "GPU"):
        assert phrase in header, (dataset, phrase)
