"""The transfer protocol: examples crafted on one model of a study, evaluated on the others."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.attack import create_attack
from robustlab.data import load_dataset
from robustlab.errors import ConfigError
from robustlab.models.store import load_model
from robustlab.seeding import derive_seed, make_generator
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.study.store import ResultsStore


def _study(tmp: Path, **attack: Any) -> dict[str, Any]:
    quick = {"architecture": "lin2022_cnn", "epochs": [1], "batch_size": 50, "learning_rate": 1e-3}
    return {
        "name": "transfer-test",
        "dataset": {"name": "mnist-sample", "test_limit": 200},
        "models": [{"name": "a", **quick}, {"name": "b", "seed": 1, **quick}],
        "defenses": ["none", "median"],
        "attacks": [
            {
                "name": "pgd",
                "params": {"steps": 5},
                "grid": {"eps": [0.15]},
                "protocols": ["oblivious", "transfer"],
                "source": "a-e1",
                **attack,
            }
        ],
        "batch_size": 200,
        "examples": 0,
        "output": str(tmp / "run"),
    }


def test_transfer_examples_come_from_the_source_and_go_through_each_defence(
    tmp_path: Path,
) -> None:
    result = run_study(parse_config(_study(tmp_path)))
    with result.results_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "attack"]
    acc = {(r["model"], r["defense"], r["protocol"]): float(r["accuracy"]) for r in rows}
    # On the source itself the transfer attack is its own white-box attack.
    assert acc[("a-e1", "none", "transfer")] == acc[("a-e1", "none", "oblivious")]
    # On b: b's predictions of the examples crafted on a, recomputed by hand.
    store = ResultsStore(result.run_dir / "results.sqlite")
    models = {m_id: load_model(entry["path"]) for m_id, entry in store.models().items()}
    x, y = next(iter(load_dataset("mnist-sample").test.subset(200).batches(200)))
    plan_seed = derive_seed(0, "attack", "pgd", {"eps": 0.15, "steps": 5})
    attack = create_attack("pgd", eps=0.15, steps=5)
    adversarial = attack.run(models["a-e1"], x, y, make_generator(plan_seed)).adversarial
    with torch.no_grad():
        expected = float((models["b-e1"](adversarial).argmax(1) == y).float().mean())
    assert acc[("b-e1", "none", "transfer")] == pytest.approx(expected, abs=1e-6)
    assert ("b-e1", "median", "transfer") in acc


def test_transfer_and_source_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name the model the examples are crafted on"):
        parse_config(_study(tmp_path, source=None))
    with pytest.raises(ConfigError, match="add transfer to protocols"):
        parse_config(_study(tmp_path, protocols=["oblivious"]))
    with pytest.raises(ConfigError, match="source 'c-e1' is not a model id"):
        parse_config(_study(tmp_path, source="c-e1"))


def test_runs_on_a_shared_source_are_made_once_for_every_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustlab.attack.gradient import PGD

    calls: list[int] = []
    run = PGD.run

    def counting(self: PGD, model: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(id(model))
        return run(self, model, *args, **kwargs)

    monkeypatch.setattr(PGD, "run", counting)
    study = _study(tmp_path)
    study["models"].append(
        {"name": "c", "seed": 2, **{k: v for k, v in study["models"][0].items() if k != "name"}}
    )
    study["attacks"][0]["protocols"] = ["transfer"]
    study["defenses"] = ["none"]
    result = run_study(parse_config(study))
    # One transfer run on a-e1 serves a-e1, b-e1 and c-e1 (one batch each).
    assert len(calls) == 1
    with result.results_csv.open() as f:
        rows = [
            r for r in csv.DictReader(f) if r["kind"] == "attack" and r["protocol"] == "transfer"
        ]
    assert len(rows) == 3


def test_a_reference_table_of_a_protocol_needs_an_attack_run_under_it(tmp_path: Path) -> None:
    study = _study(tmp_path)
    table = {
        "title": "t",
        "rows_are": "models",
        "degradation": "pgd",
        "metric": "accuracy",
        "columns": [0.15],
        "rows": {"a-e1": [0.5]},
    }
    study["reference"] = {"citation": "c", "tables": [{**table, "protocol": "transfer"}]}
    parse_config(study)
    study["reference"]["tables"][0]["protocol"] = "adaptive"
    with pytest.raises(ConfigError, match="must be the label of an attack of this study run"):
        parse_config(study)
