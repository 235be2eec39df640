"""The study-part interface, the stored plan (the report reads the store alone) and schema 2."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from robustlab.errors import RobustlabError
from robustlab.report.build import build_report
from robustlab.report.document import Block, Paragraph
from robustlab.study.config import StudyConfig, parse_config
from robustlab.study.parts import (
    CSV_COLUMNS,
    PARTS,
    PartRun,
    ReportContext,
    StudyPart,
    register_part,
    study_parts,
)
from robustlab.study.plan import PlannedModel
from robustlab.study.runner import run_study
from robustlab.study.store import ResultsStore

NETS = """
from torch import nn


def make_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
"""


def _study(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "parts",
        "dataset": {"name": "mnist-sample", "test_limit": 60, "train_limit": 200},
        "models": [
            {
                "name": "lin",
                "factory": str(tmp_path / "nets.py") + ":make_net",
                "epochs": [1],
                "learning_rate": 0.01,
            }
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.3]}}],
        "defenses": ["none", "median"],
        "attacks": [{"name": "fgsm", "grid": {"eps": [0.1]}}],
        "batch_size": 60,
        "examples": 2,
        **extra,
    }


def test_parts_are_registered_in_order() -> None:
    assert [p.name for p in study_parts()] == [
        "degradations", "attacks", "denoisers", "minimal_noise", "certify"
    ]  # fmt: skip


def test_report_reads_the_store_alone_and_csv_has_kind_and_protocol(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(NETS)
    result = run_study(parse_config(_study(tmp_path)), run_dir=tmp_path / "run", device="cpu")
    with result.results_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    kinds = {(r["kind"], r["protocol"]) for r in rows}
    assert kinds == {
        ("degradation", ""), ("attack", "oblivious"), ("attack", "adaptive"),
        ("attack", "worst-case"),
    }  # fmt: skip
    assert {r["defense"] for r in rows} == {"none", "median"}
    # The user's file is gone: the report is rebuilt from the store, importing nothing of it.
    (tmp_path / "nets.py").unlink()
    before = result.report_md.read_text()
    result.report_md.unlink()
    build_report(result.run_dir)
    assert result.report_md.read_text() == before
    store = ResultsStore(result.run_dir / "results.sqlite")
    try:
        plan = store.get_meta("plan")
        assert set(plan["parts"]) == {"degradations", "attacks"}
        assert plan["parts"]["attacks"]["methods"] == [
            "median: adaptive attacks use exact gradients"
        ]
        kinds_stored = {(c.kind, c.protocol) for c in store.cells()}
        assert ("attack", "adaptive") in kinds_stored and ("degradation", "") in kinds_stored
    finally:
        store.close()


class _CountPart(StudyPart[list[str]]):
    """A part defined outside robustlab: counts the models, one 'job' per model."""

    name = "count_models"
    order = 99

    def plan(
        self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]
    ) -> list[str] | None:
        return [m.id for m in models]

    def encode(self, plan: list[str]) -> dict[str, Any]:
        return {"ids": plan}

    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> list[str]:
        return list(data["ids"])

    def size(self, plan: list[str]) -> int:
        return len(plan)

    def done(self, plan: list[str], store: ResultsStore) -> int:
        return len(store.get_meta("count_models", []))

    def run(self, plan: list[str], context: PartRun) -> int:
        for model in plan:
            context.provider.provide(next(m for m in context.models if m.id == model))
        context.store.set_meta("count_models", plan)
        return len(plan)

    def report_blocks(self, plan: list[str], context: ReportContext) -> list[Block]:
        return [Paragraph(f"counted models: {', '.join(plan)}")]


def test_a_new_part_plugs_in_without_touching_the_runner(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(NETS)
    register_part(_CountPart)
    try:
        study = _study(tmp_path, attacks=[])
        result = run_study(parse_config(study), run_dir=tmp_path / "run", device="cpu")
        assert result.parts["count_models"] == (1, 1)
        assert "counted models: lin-e1" in result.report_md.read_text()
    finally:
        PARTS[:] = [p for p in PARTS if p.name != "count_models"]


def _v2_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE models (model_id TEXT PRIMARY KEY, path TEXT NOT NULL, card TEXT NOT NULL);
        CREATE TABLE cells (key TEXT PRIMARY KEY, model TEXT NOT NULL, defense TEXT NOT NULL,
            degradation TEXT NOT NULL, degradation_name TEXT NOT NULL, params TEXT NOT NULL,
            severity_name TEXT, severity REAL, trial INTEGER NOT NULL, n INTEGER NOT NULL,
            errors INTEGER NOT NULL, accuracy REAL NOT NULL, confusion TEXT NOT NULL,
            seconds REAL NOT NULL, finished_at REAL NOT NULL, copies INTEGER NOT NULL,
            psnr REAL, ssim REAL, identical INTEGER NOT NULL);
        CREATE TABLE records (key TEXT PRIMARY KEY, npz BLOB NOT NULL);
        PRAGMA user_version = 2;
        """
    )
    db.executemany(
        "INSERT INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            ("k1", "cnn-e1", "median", "salt_pepper", "salt_pepper", '{"amount": 0.1}',
             "amount", 0.1, 0, 100, 3, 0.97, "[[1]]", 0.5, 1.0, 4, 20.5, 0.8, 0),
            ("k2", "cnn-e1", "median (adaptive)", "pgd", "pgd", '{"eps": 0.1}', "eps", 0.1,
             0, 100, 40, 0.6, "[[1]]", 2.0, 1.0, 1, 30.0, None, 0),
        ],
    )  # fmt: skip
    db.execute("INSERT INTO meta VALUES ('config', ?)", (json.dumps({"name": "old"}),))
    db.commit()
    db.close()


def test_a_schema_2_store_is_migrated_and_its_report_asks_for_one_rerun(tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    run.mkdir()
    _v2_store(run / "results.sqlite")
    store = ResultsStore(run / "results.sqlite")
    try:
        cells = {c.key: c for c in store.cells()}
        assert cells["k1"].kind == "degradation" and cells["k1"].protocol == ""
        assert (cells["k1"].setting, cells["k1"].copies, cells["k1"].psnr) == (
            "salt_pepper",
            4,
            20.5,
        )
        assert (cells["k2"].kind, cells["k2"].defense, cells["k2"].protocol) == (
            "attack",
            "median",
            "adaptive",
        )
        assert store.finished_keys() == {"k1", "k2"}  # a rerun keeps them
    finally:
        store.close()
    with pytest.raises(RobustlabError, match="run the study once more"):
        build_report(run)
