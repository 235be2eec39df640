"""Cell keys and model-cache keys ignore dataset settings that only change speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from robustlab.data.streaming import ImageSpec, StreamingSplit
from robustlab.study.config import StudyConfig, load_config
from robustlab.study.plan import dataset_key, make_plan
from robustlab.study.runner import builtin_config
from robustlab.train.cache import ModelCache


def _study(dataset: dict[str, Any]) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "keys",
            "dataset": dataset,
            "trials": 2,
            "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1, 2]}],
            "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1, 0.3]}}],
            "defenses": ["none", "median"],
        }
    )


def _cell_keys(config: StudyConfig) -> list[str]:
    return [cell.key for cell in make_plan(config, data_fingerprint="fp").cells]


def _model_keys(config: StudyConfig, tmp_path: Path) -> list[str]:
    cache = ModelCache(tmp_path)
    return [
        cache.key(model.recipe, "fp")
        for model in make_plan(config, data_fingerprint="fp").models
        if model.recipe is not None
    ]


@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "gtsrb", "params": {"image_size": 32}},
        {"name": "gtsrb"},
        {"name": "folder:/data/signs", "params": {"image_size": 16, "stream": True}},
    ],
)
def test_workers_do_not_change_cell_or_model_keys(dataset: dict[str, Any], tmp_path: Path) -> None:
    base = _study(dataset)
    params = dict(dataset.get("params", {}))
    variants = [_study({**dataset, "params": {**params, "workers": w}}) for w in (0, 4)]
    for variant in variants:
        assert _cell_keys(variant) == _cell_keys(base)
        assert _model_keys(variant, tmp_path) == _model_keys(base, tmp_path)


def test_a_parameter_that_changes_the_data_still_changes_the_keys() -> None:
    small = _study({"name": "gtsrb", "params": {"image_size": 32, "workers": 2}})
    large = _study({"name": "gtsrb", "params": {"image_size": 48, "workers": 2}})
    assert set(_cell_keys(small)).isdisjoint(_cell_keys(large))


def test_studies_without_dataset_params_keep_their_keys() -> None:
    # Keys were computed from ``DatasetConfig.model_dump()``; without params the new dataset
    # part must be exactly that dump, so stored results of existing studies stay valid.
    quickstart = load_config(builtin_config("quickstart"))
    plain = _study({"name": "gtsrb", "test_limit": 100})
    for config in (quickstart, plain):
        assert not config.dataset.params
        assert dataset_key(config.dataset) == config.dataset.model_dump()


def test_streaming_fingerprint_does_not_depend_on_workers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    labels = torch.arange(6) % 2
    spec = ImageSpec(3, 4, 4)
    prints = {
        StreamingSplit(paths, labels, spec, root=tmp_path, workers=workers).fingerprint()
        for workers in (0, 2)
    }
    assert len(prints) == 1
