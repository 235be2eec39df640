"""The artefact graph: parents first, each artefact trained once, resume in mid-graph, keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.errors import ConfigError
from robustlab.models.store import load_model
from robustlab.study.artefacts import artefact_graph
from robustlab.study.config import parse_config
from robustlab.study.plan import make_plan, plan_models
from robustlab.study.runner import run_study
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe

NOISE = {"degradation": "gaussian_noise", "levels": {"low": 0.1, "high": 0.3}}


def _graph_study(**extra: Any) -> dict[str, Any]:
    return {
        "name": "graph",
        "seed": 1,
        "dataset": {"name": "mnist-sample", "test_limit": 100, "train_limit": 300},
        "models": [
            {
                "name": "head",
                "parent": "cnn-e1",
                "strategy": {
                    "name": "transfer",
                    "params": {"train": "head", "perturbation": NOISE},
                },
                "epochs": [1],
                "learning_rate": 0.001,
            },
            {
                "name": "whole",
                "parent": "cnn-e1",
                "strategy": {"name": "transfer", "params": {"perturbation": NOISE}},
                "epochs": [1],
                "learning_rate": 0.001,
            },
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1], "learning_rate": 0.001},
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.3]}}],
        "batch_size": 100,
        "examples": 0,
        **extra,
    }


def test_plan_orders_parents_first_and_keys_depend_on_parents() -> None:
    config = parse_config(_graph_study())
    models = plan_models(config)
    assert [m.id for m in models] == ["cnn-e1", "head-e1", "whole-e1"]
    nodes = artefact_graph(models)
    assert nodes[1].parents == {"start": "cnn-e1"}
    assert nodes[1].strategy.startswith("transfer(")
    # The child's architecture comes from the parent; its cell keys carry the parent's recipe.
    head = models[1]
    assert head.recipe is not None and head.recipe.architecture == "lin2022_cnn"
    assert head.key()["parents"]["start"] == models[0].key()
    # A different parent recipe changes the child's cell keys.
    other = _graph_study()
    other["models"][2]["learning_rate"] = 0.002
    cells = {c.key for c in make_plan(config, "fp").cells if c.model.id == "head-e1"}
    other_cells = {
        c.key for c in make_plan(parse_config(other), "fp").cells if c.model.id == "head-e1"
    }
    assert cells and not cells & other_cells


def test_standard_recipe_dumps_and_hashes_as_before_strategies(tmp_path: Path) -> None:
    recipe = TrainingRecipe(architecture="lin2022_cnn", dataset="mnist", epochs=10)
    assert "strategy" not in recipe.model_dump() and "betas" not in recipe.model_dump()
    # The key of this recipe before strategies existed (robustlab 0.1.0, code version 1).
    assert ModelCache(tmp_path).key(recipe, "fp") == "c2992f26d48ec4f276b0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parent": "nope-e1"}, "not a model id of this study"),
        ({"parent": None}, "name it with parent"),
        ({"architecture": "lin2022_cnn"}, "takes its network from it"),
    ],
)
def test_bad_parents_are_refused_before_any_work(change: dict[str, Any], message: str) -> None:
    study = _graph_study()
    study["models"][0] = {**study["models"][0], **change}
    with pytest.raises(ConfigError, match=message):
        parse_config(study)


def test_a_parent_of_a_from_scratch_strategy_is_refused() -> None:
    study = _graph_study()
    study["models"][0] = {"name": "x", "parent": "cnn-e1", "epochs": [1]}
    with pytest.raises(ConfigError, match="trains from scratch"):
        parse_config(study)


def test_cycles_are_refused() -> None:
    study = _graph_study()
    study["models"] = [
        {"name": "a", "parent": "b-e1", "strategy": "transfer", "epochs": [1]},
        {"name": "b", "parent": "a-e1", "strategy": "transfer", "epochs": [1]},
    ]
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(study)


@pytest.mark.slow
def test_parent_trained_once_and_resume_between_parent_and_child(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    config = parse_config(_graph_study())

    class Killed(Exception):
        pass

    # Kill the study as soon as the parent's cells are stored: the children are untrained.
    def kill(group: object) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_study(config, run_dir=tmp_path / "run", cache=cache, device="cpu", after_group=kill)
    parent_folders = list((tmp_path / "cache").iterdir())
    assert len(parent_folders) == 1
    parent_weights = parent_folders[0] / "epoch-0001.safetensors"
    stamp = parent_weights.stat().st_mtime_ns

    result = run_study(config, run_dir=tmp_path / "run", cache=cache, device="cpu")
    assert parent_weights.stat().st_mtime_ns == stamp  # the parent was not retrained
    assert len(list((tmp_path / "cache").iterdir())) == 3  # parent + two children, once each

    models = json.loads((result.run_dir / "models.json").read_text())
    head_card = models["head-e1"]["card"]
    assert head_card["parents"]["start"]["id"] == "cnn-e1"
    assert head_card["parents"]["start"]["key"] == parent_folders[0].name
    assert head_card["strategy"] == "transfer"
    assert head_card["train_accuracy"] is not None and head_card["images_seen"] == 300

    # head-only transfer: the parent's convolutions are unchanged, the new head is trained.
    parent = load_model(parent_weights)
    head = load_model(models["head-e1"]["path"])
    whole = load_model(models["whole-e1"]["path"])
    assert torch.equal(parent.features[0].weight, head.features[0].weight)
    assert not torch.equal(parent.features[0].weight, whole.features[0].weight)
    assert isinstance(head.classifier[-1], torch.nn.Sequential)

    # A third run trains nothing and computes nothing.
    again = run_study(config, run_dir=tmp_path / "run", cache=cache, device="cpu")
    assert again.cells_run == 0
