"""Ensembles in a study: members trained once and shared, seeds copies, config errors, attacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.errors import ConfigError
from robustlab.models.ensemble import Ensemble
from robustlab.models.store import load_model
from robustlab.study.artefacts import artefact_graph
from robustlab.study.config import parse_config
from robustlab.study.plan import make_plan, plan_models
from robustlab.study.runner import prepare_dataset, run_study
from robustlab.study.store import ResultsStore
from robustlab.train.cache import ModelCache


def _study(**extra: Any) -> dict[str, Any]:
    return {
        "name": "ens",
        "seed": 0,
        "dataset": {"name": "mnist-sample", "test_limit": 200, "train_limit": 400},
        "models": [
            {"name": "mean", "ensemble": {"members": ["cnn"]}},
            {"name": "vote", "ensemble": {"members": ["cnn"], "combine": "vote"}},
            {
                "name": "cnn",
                "architecture": "lin2022_cnn",
                "epochs": [1],
                "seeds": [0, 1, 2],
                "learning_rate": 0.002,
            },
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.2]}}],
        "batch_size": 100,
        "examples": 0,
        **extra,
    }


def test_seed_copies_and_ensembles_are_planned_with_members_first() -> None:
    config = parse_config(_study())
    models = plan_models(config)
    assert [m.id for m in models] == ["cnn-e1-s0", "cnn-e1-s1", "cnn-e1-s2", "mean", "vote"]
    seeds = [m.recipe.seed for m in models[:3] if m.recipe is not None]
    assert seeds == [0, 1, 2]
    mean = models[3]
    assert mean.parent_ids == {
        "member1": "cnn-e1-s0",
        "member2": "cnn-e1-s1",
        "member3": "cnn-e1-s2",
    }
    assert mean.strategy == "ensemble(probability)" and mean.length == "ensemble of 3"
    assert artefact_graph(models)[3].kind == "ensemble"
    # The combination and every member's recipe are part of the ensemble's cell keys.
    keys = {c.model.id: c.key for c in make_plan(config, "fp").cells if c.setting.name == "none"}
    assert len(set(keys.values())) == 5
    other = _study()
    other["models"][2]["learning_rate"] = 0.003
    other_keys = {
        c.model.id: c.key for c in make_plan(parse_config(other), "fp").cells
        if c.setting.name == "none"
    }  # fmt: skip
    assert keys["mean"] != other_keys["mean"]


def test_ensembles_share_members_trained_once_and_score_as_their_mean(tmp_path: Path) -> None:
    config = parse_config(_study())
    cache = ModelCache(tmp_path / "cache")
    result = run_study(config, run_dir=tmp_path / "run", cache=cache, device="cpu")
    assert len(list((tmp_path / "cache").iterdir())) == 3  # three seeds, none trained twice
    store = ResultsStore(result.run_dir / "results.sqlite")
    clean = {r.model: r.accuracy for r in store.cells() if r.setting_name == "none"}
    assert set(clean) == {"cnn-e1-s0", "cnn-e1-s1", "cnn-e1-s2", "mean", "vote"}
    # The stored ensemble accuracy is the accuracy of the mean of the members' probabilities.
    models = json.loads((result.run_dir / "models.json").read_text())
    x, y = next(prepare_dataset(config, None).test.batches(200))
    members = [load_model(models[f"cnn-e1-s{s}"]["path"]) for s in range(3)]
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
        expected = float((mean.argmax(dim=1) == y).float().mean())
        vote = float((Ensemble(members, "vote")(x).argmax(dim=1) == y).float().mean())
    assert clean["mean"] == pytest.approx(expected)
    assert clean["vote"] == pytest.approx(vote)
    assert models["mean"]["card"]["members"] == ["cnn-e1-s0", "cnn-e1-s1", "cnn-e1-s2"]
    assert models["mean"]["graph"]["parents"]["member2"] == "cnn-e1-s1"
    again = run_study(config, run_dir=tmp_path / "run", cache=cache, device="cpu")
    assert again.cells_run == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"members": ["nope"]}, "ensemble member 'nope' is not a model id"),
        ({"members": ["mean"]}, "cannot be built from itself"),
        ({"members": ["cnn", "cnn-e1-s0"]}, "the models it is built from repeat"),
        ({"combine": "median"}, "combine"),
    ],
)
def test_bad_ensembles_are_refused_before_any_work(change: dict[str, Any], message: str) -> None:
    study = _study()
    study["models"][0]["ensemble"] = {"members": ["cnn"], **change}
    with pytest.raises(ConfigError, match=message):
        parse_config(study)


def test_ensemble_cycles_and_training_fields_are_refused() -> None:
    study = _study()
    study["models"][0]["ensemble"] = {"members": ["vote"]}
    study["models"][1]["ensemble"] = {"members": ["mean"]}
    with pytest.raises(ConfigError, match="form a cycle"):
        parse_config(study)
    study = _study()
    study["models"][0]["epochs"] = [3]
    with pytest.raises(ConfigError, match=r"built from other models.*remove epochs"):
        parse_config(study)
    study = _study()
    study["models"][2]["seeds"] = [1, 1]
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        parse_config(study)
    study = _study()
    study["models"].append({"name": "tl", "parent": "mean", "strategy": "transfer", "epochs": [1]})
    with pytest.raises(ConfigError, match=r"parent 'mean' is a composite \(ensemble\)"):
        parse_config(study)


def test_an_ensemble_of_an_ensemble_is_allowed() -> None:
    study = _study()
    study["models"].append({"name": "both", "ensemble": {"members": ["mean", "cnn-e1-s0"]}})
    models = plan_models(parse_config(study))
    assert models[-1].id == "both" and models[-1].parent_ids["member1"] == "mean"
