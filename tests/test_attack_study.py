from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.errors import ConfigError
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.attack_executor import AttackGroup, execute_attacks, make_attack_plan
from robustlab.study.config import StudyConfig, parse_config
from robustlab.study.plan import make_plan
from robustlab.study.runner import data_fingerprint, prepare_dataset, run_study
from robustlab.study.store import STORE_NAME, ResultsStore
from robustlab.train.cache import ModelCache


def _config(tmp_path: Path, **extra: Any) -> StudyConfig:
    data: dict[str, Any] = {
        "name": "attack-demo",
        # 2,000 images, 2 epochs of 40 steps: enough for the CNN to learn (a model that
        # predicts one class everywhere makes every accuracy equal and the checks vacuous).
        "dataset": {"name": "mnist-sample", "test_limit": 24, "train_limit": 2000},
        "models": [
            {
                "name": "cnn",
                "architecture": "lin2022_cnn",
                "epochs": [2],
                "batch_size": 50,
                "learning_rate": 1e-3,
            }
        ],
        "defenses": ["none", "median", "jpeg:quality=50"],
        "batch_size": 16,
        "examples": 0,
        "attacks": [
            {"name": "pgd", "params": {"steps": 2}, "grid": {"eps": [0.0, 0.1, 0.5]}},
            {
                "name": "pgd",
                "label": "pgd-steps",
                "params": {"eps": 0.1},
                "grid": {"steps": [1, 2]},
            },
            {"name": "fgsm", "grid": {"eps": [0.1]}, "protocols": ["adaptive"]},
        ],
        "output": str(tmp_path / "run"),
        **extra,
    }
    return StudyConfig.model_validate(data)


def test_attack_config_validates_names_grids_and_labels() -> None:
    base = {"name": "x", "dataset": {"name": "mnist-sample"},
            "models": [{"name": "m", "architecture": "lin2022_cnn"}]}  # fmt: skip
    config = parse_config({**base, "attacks": [{"name": "pgd", "grid": {"eps": "huang2021"}}]})
    assert len(config.attacks[0].settings()) == 13 and config.attacks[0].swept == "eps"
    assert config.attacks[0].protocols == ["oblivious", "adaptive"]
    for attacks, message in [
        ([{"name": "pgdd"}], "unknown attack 'pgdd'"),
        ([{"name": "pgd", "grid": {"eps": "huang"}}], "unknown attack grid 'huang'"),
        ([{"name": "pgd", "grid": {"eps": [-1]}}], "eps must be a finite number >= 0"),
        ([{"name": "pgd", "grid": {"epsilon": [0.1]}}], "unknown parameter of attack 'pgd'"),
        ([{"name": "pgd"}, {"name": "pgd"}], "attack labels must be unique"),
        ([{"name": "pgd", "protocols": ["whitebox"]}], "protocols"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**base, "attacks": attacks})


def test_attack_plan_shares_seeds_and_dedupes_cells(tmp_path: Path) -> None:
    config = _config(tmp_path)
    models = make_plan(config, "fp").models
    plan = make_attack_plan(config, "fp", models)
    # pgd: 3 eps x 3 defences x 2 protocols; pgd-steps: 2 x 3 x 2; fgsm: 1 x 3 x 1
    assert len(plan.cells) == 18 + 12 + 3
    # pgd eps=0.1 steps=2 appears in both pgd entries: the same cells, computed once
    assert len({c.key for c in plan.cells}) == 33 - 6
    seeds = {s.key: s.seed for s in plan.settings}  # one seed per distinct setting
    assert len(seeds) == 5 and len(set(seeds.values())) == 5
    again = make_attack_plan(config, "fp", models)
    assert [c.key for c in again.cells] == [c.key for c in plan.cells]
    other = make_attack_plan(config, "other-data", models)
    assert not {c.key for c in other.cells} & {c.key for c in plan.cells}


@pytest.mark.slow
def test_attack_study_runs_reports_and_resumes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    # Interrupt the attack part after its first group, then let run_study finish the rest.
    dataset = prepare_dataset(config, None)
    fingerprint = data_fingerprint(dataset)
    plan = make_attack_plan(config, fingerprint, make_plan(config, fingerprint).models)
    store = ResultsStore(Path(config.output or "") / STORE_NAME)

    class Stop(Exception):
        pass

    def stop(group: AttackGroup) -> None:
        raise Stop

    with pytest.raises(Stop):
        provider = ArtefactProvider(dataset, store, device=torch.device("cpu"), cache=ModelCache())
        execute_attacks(
            plan, dataset, store, provider=provider, batch_size=config.batch_size,
            after_group=stop,
        )  # fmt: skip
    first = len(store.finished_keys())
    store.close()
    assert first == 6  # eps = 0: 3 defences x 2 protocols

    result = run_study(config)
    # 3 clean cells + 27 distinct attack cells (pgd eps=0.1 steps=2 is shared by two entries:
    # computed and counted once, but listed under both labels in results.csv)
    assert result.cells_total == 3 + 27
    with result.results_csv.open() as f:
        rows = list(csv.DictReader(f))
    attack_rows = [r for r in rows if r["degradation"] in ("pgd", "pgd-steps", "fgsm")]
    assert len(attack_rows) == 33
    assert {(r["defense"], r["protocol"]) for r in attack_rows} >= {
        ("median", "oblivious"),
        ("jpeg", "adaptive"),
    }
    assert {r["kind"] for r in attack_rows} == {"attack"}
    # the model has learned: clean accuracy well above chance (10%)
    clean = [
        float(r["accuracy"])
        for r in attack_rows
        if r["defense"] == "none"
        and r["protocol"] == "oblivious"
        and json.loads(r["params"])["eps"] == 0.0
    ]
    assert len(clean) == 1 and clean[0] >= 0.6
    worst = [r for r in rows if r["degradation"] == "worst-case"]
    assert {(r["defense"], r["severity"]) for r in worst} == {
        (d, e) for d in ("none", "median", "jpeg") for e in ("0.0", "0.1", "0.5")
    }
    # The worst case is the per-sample minimum: recomputed here from the stored records, it
    # must match, and it is never above any single attack at the same budget (exact eps).
    correct: dict[str, np.ndarray] = {}
    store = ResultsStore(Path(config.output or "") / STORE_NAME)
    try:
        for cell in plan.cells:
            records = store.records(cell.key)
            assert records is not None
            correct[cell.key] = records["predicted"] == records["label"]
    finally:
        store.close()
    spread = False
    for w in worst:
        eps = json.loads(w["params"])["eps"]
        same = [r for r in attack_rows if r["defense"] == w["defense"]
                and json.loads(r["params"])["eps"] == eps]  # fmt: skip
        # every setting at this budget: pgd in 2 protocols; at eps 0.1 also pgd-steps (steps
        # 1 and 2, 2 protocols) and adaptive fgsm
        assert len(same) == (2 if eps != 0.1 else 2 + 2 * 2 + 1)
        keys = {
            c.key for c in plan.cells if c.defense.label == w["defense"] and c.setting.eps == eps
        }
        robust = np.logical_and.reduce([correct[k] for k in keys])
        assert float(w["accuracy"]) == pytest.approx(robust.mean(), abs=1e-6)
        accuracies = [float(r["accuracy"]) for r in same]
        assert float(w["accuracy"]) <= min(accuracies)
        spread |= max(accuracies) > min(accuracies)
    assert spread  # attacks differ somewhere, so the minimum is a real choice
    report = result.report_md.read_text()
    for text in ("## Adversarial attacks", "### Sanity flags", "### Worst case per sample",
                 "median (adaptive)", "jpeg: adaptive attacks use BPDA"):  # fmt: skip
        assert text in report
    # No degradations: one clean-error table instead of a section of empty per-model headings.
    assert "## Errors on clean images" in report
    assert "Errors per defence and degradation" not in report
    assert (result.run_dir / "report_files" / "attacks-cnn-e2.png").exists()

    again = run_study(config)
    assert again.cells_run == 0
    with again.results_csv.open() as f:
        assert list(csv.DictReader(f)) == rows
