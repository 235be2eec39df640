"""A study with autoattack, a minimum-norm attack, Square and PGD: worst case, curves, words."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robustlab.attack.minimum_norm import robust_accuracy_curve
from robustlab.report.attack_sections import overstated
from robustlab.study.attack_executor import make_attack_plan, worst_case
from robustlab.study.config import StudyConfig
from robustlab.study.plan import make_plan
from robustlab.study.runner import run_study
from robustlab.study.store import STORE_NAME, ResultsStore


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, Path]:
    out = tmp_path_factory.mktemp("strong")
    data: dict[str, Any] = {
        "name": "strong-attacks",
        "dataset": {"name": "mnist-sample", "test_limit": 60, "train_limit": 2000},
        "models": [
            {
                "name": "cnn",
                "architecture": "lin2022_cnn",
                "epochs": [2],
                "batch_size": 50,
                "learning_rate": 1e-3,
            }
        ],
        "defenses": ["none", "median"],
        "batch_size": 30,
        "examples": 0,
        "attacks": [
            # A deliberately weak PGD: 1 step of eps / 10, which autoattack must beat.
            {
                "name": "pgd",
                "label": "pgd-weak",
                "params": {"steps": 1, "rel_step_size": 0.1},
                "grid": {"eps": [0.05, 0.1]},
                "protocols": ["oblivious"],
            },
            {
                "name": "autoattack",
                "params": {"steps": 10, "targets": 2, "queries": 60},
                "grid": {"eps": [0.05, 0.1]},
                "protocols": ["oblivious", "adaptive"],
            },
            {"name": "fmn", "params": {"norm": "linf", "steps": 30}, "protocols": ["oblivious"]},
            {
                "name": "square",
                "params": {"queries": 50},
                "grid": {"eps": [0.1]},
                "protocols": ["oblivious"],
            },
        ],
        "output": str(out / "run"),
    }
    config = StudyConfig.model_validate(data)
    run_study(config, progress=False)
    return config, out / "run"


def test_minimum_norm_run_joins_the_worst_case_and_autoattack_beats_weak_pgd(
    finished: tuple[StudyConfig, Path],
) -> None:
    config, run = finished
    store = ResultsStore(run / STORE_NAME)
    fingerprint = store.get_meta("data_fingerprint")
    plan = make_attack_plan(config, fingerprint, make_plan(config, fingerprint).models)
    rows = {r.key: r for r in store.cells([c.key for c in plan.cells])}
    assert len(rows) == len({c.key for c in plan.cells})
    fmn = [c for c in plan.cells if c.setting.name == "fmn"]
    assert fmn and all(c.setting.unbounded for c in fmn)
    worst = worst_case(plan, store)
    for (model, defense, norm, eps), (robust, n, names) in worst.items():
        assert any(name.startswith("fmn") for name in names)
        # The worst case is no better than any single attack at that budget, nor than the
        # minimum-norm curve read at eps.
        for cell in plan.cells:
            if (cell.model.id, cell.defense.label, cell.setting.norm, cell.setting.eps) == (
                model, defense, norm, eps,
            ):  # fmt: skip
                assert robust / n <= rows[cell.key].accuracy + 1e-9
        for cell in fmn:
            if cell.defense.label == defense:
                records = store.records(cell.key)
                assert records is not None
                curve = robust_accuracy_curve(
                    records["distance"], records["predicted"] != records["label"], [eps]
                )
                assert robust / n <= curve[0] + 1e-9
    for eps in (0.05, 0.1):
        auto = [c for c in plan.cells if c.setting.name == "autoattack" and c.setting.eps == eps
                and c.defense.name == "none"]  # fmt: skip
        weak = [c for c in plan.cells if c.setting.label == "pgd-weak" and c.setting.eps == eps
                and c.defense.name == "none"]  # fmt: skip
        assert rows[auto[0].key].accuracy <= rows[weak[0].key].accuracy
    # autoattack's per-sample details and notes are stored.
    cell = next(c for c in plan.cells if c.setting.name == "autoattack")
    records = store.records(cell.key)
    assert records is not None and "detail_found_by" in records
    assert rows[cell.key].metrics["attack_notes"]["attacks"] == [
        "apgd-ce",
        "apgd-t",
        "fab-t",
        "square",
    ]
    gaps = overstated(plan, rows)
    assert any(weak.setting.label == "pgd-weak" for _, _, _, _, weak, *_ in gaps)


def test_report_says_where_pgd_overstated_and_draws_the_curve(
    finished: tuple[StudyConfig, Path],
) -> None:
    _, run = finished
    report = (run / "report.md").read_text()
    assert "Did any attack overstate robustness?" in report
    assert "**pgd-weak overstated robustness**" in report
    assert "Minimum-norm attacks: robust accuracy at every eps" in report
    assert "autoattack: ran apgd-ce, apgd-t, fab-t, square (standard version)" in report
    assert (
        run / "figures" / "minimum-norm-cnn-e2.png"
    ).is_file() or "minimum-norm-cnn-e2" in report
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fmn = [r for r in rows if r["degradation_name"] == "fmn"]
    assert fmn and all(r["severity"] == "" for r in fmn)
    worst = [r for r in rows if r["protocol"] == "worst-case"]
    assert {float(r["severity"]) for r in worst} == {0.05, 0.1}
    assert np.all([0 <= float(r["accuracy"]) <= 1 for r in worst])
