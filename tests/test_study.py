from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from robustlab.report.build import build_report
from robustlab.study.config import parse_config
from robustlab.study.plan import Group
from robustlab.study.runner import CSV_COLUMNS, run_study
from robustlab.study.store import ResultsStore

SMALL: dict[str, Any] = {
    "name": "small",
    "seed": 3,
    "dataset": {"name": "mnist-sample", "test_limit": 200},
    "models": [
        {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1, 2], "learning_rate": 0.001}
    ],
    "degradations": [
        {"name": "gaussian_noise", "grid": {"sigma": [0.2]}},
        {"name": "salt_pepper", "grid": {"amount": [0.1, 0.3]}},
    ],
    "defenses": ["none", "box", "median"],
    "trials": 2,
    "batch_size": 64,
    "examples": 4,
}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_study_runs_and_writes_everything(tmp_path: Path) -> None:
    result = run_study(parse_config(SMALL), run_dir=tmp_path / "run", device="cpu")
    # 2 models x 3 defences x (clean + 3 noisy settings x 2 trials)
    assert result.cells_total == result.cells_run == 2 * 3 * (1 + 3 * 2)
    rows = _read_csv(result.results_csv)
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == result.cells_total
    for row in rows:
        assert int(row["n"]) == 200
        assert float(row["accuracy"]) == pytest.approx(1 - int(row["errors"]) / 200)
    severities = {(r["degradation"], r["severity"]) for r in rows}
    assert ("clean", "") in severities and ("salt_pepper", "0.3") in severities
    # The two trials of a random setting differ; the clean cell has one trial.
    sp = [
        r
        for r in rows
        if r["model"] == "cnn-e2" and r["defense"] == "none" and r["severity"] == "0.3"
    ]
    assert len(sp) == 2
    assert len([r for r in rows if r["degradation"] == "clean"]) == 2 * 3
    for name in ("report.md", "report.html", "models.json", "config.yaml"):
        assert (result.run_dir / name).exists()
    html = result.report_html.read_text()
    assert "data:image/png;base64," in html and "<img" in html
    assert 'src="http' not in html, "the HTML report must be self-contained"
    assert "Errors per defence" in result.report_md.read_text()

    # A rerun computes nothing and trains nothing.
    again = run_study(parse_config(SMALL), run_dir=tmp_path / "run", device="cpu")
    assert again.cells_run == 0
    assert _read_csv(again.results_csv) == rows


def test_interrupted_run_resumes_to_identical_results(tmp_path: Path) -> None:
    reference = run_study(parse_config(SMALL), run_dir=tmp_path / "straight", device="cpu")
    seen = {"groups": 0}

    def interrupt(group: Group) -> None:
        seen["groups"] += 1
        if seen["groups"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(
            parse_config(SMALL), run_dir=tmp_path / "resumed", device="cpu", after_group=interrupt
        )
    store = ResultsStore(tmp_path / "resumed" / "results.sqlite")
    partial = len(store.finished_keys())
    store.close()
    assert 0 < partial < reference.cells_total
    resumed = run_study(parse_config(SMALL), run_dir=tmp_path / "resumed", device="cpu")
    assert resumed.cells_run == reference.cells_total - partial
    assert resumed.results_csv.read_bytes() == reference.results_csv.read_bytes()


def test_report_is_rebuilt_from_the_store_alone(tmp_path: Path) -> None:
    result = run_study(parse_config({**SMALL, "trials": 1}), run_dir=tmp_path / "r", device="cpu")
    original = result.report_md.read_text()
    result.report_md.unlink()
    result.report_html.unlink()
    md, html = build_report(result.run_dir)
    assert md.read_text() == original
    assert html.exists()


def test_changed_grid_only_computes_new_cells(tmp_path: Path) -> None:
    first = run_study(parse_config({**SMALL, "trials": 1}), run_dir=tmp_path / "r", device="cpu")
    bigger = {**SMALL, "trials": 1}
    bigger["defenses"] = [
        "none",
        "box",
        "median",
        {"name": "median", "params": {"size": 5}, "label": "median5"},
    ]
    second = run_study(parse_config(bigger), run_dir=tmp_path / "r", device="cpu")
    assert second.cells_total == first.cells_total * 4 // 3
    assert second.cells_run == second.cells_total - first.cells_total


def test_monte_carlo_copies_quality_and_records(tmp_path: Path) -> None:
    import numpy as np

    config = {
        **SMALL,
        "models": [SMALL["models"][0] | {"epochs": [1]}],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.1, 0.3]}}],
        "defenses": ["none", "median"],
        "trials": 1,
        "copies": 4,
        "records": 2,
        "baseline_model": "cnn-e1",
    }
    result = run_study(parse_config(config), run_dir=tmp_path / "mc", device="cpu")
    rows = _read_csv(result.results_csv)
    noisy = [r for r in rows if r["degradation"] == "gaussian_noise"]
    clean = [r for r in rows if r["degradation"] == "clean"]
    assert all(int(r["n"]) == 200 * 4 and r["copies"] == "4" for r in noisy)
    assert all(int(r["n"]) == 200 and r["psnr"] == "" for r in clean)
    psnr = {r["severity"]: float(r["psnr"]) for r in noisy if r["defense"] == "none"}
    # Clipped Gaussian noise: PSNR close to 20 log10(1 / sigma), a bit higher from clipping.
    assert 20.0 <= psnr["0.1"] <= 23.0 and 10.4 <= psnr["0.3"] <= 14.0
    assert float(noisy[0]["ssim"]) < 1.0
    # Per-sample records: 2 of the 4 copies of every image, for each cell.
    store = ResultsStore(result.run_dir / "results.sqlite")
    cells = [c for c in store.cells() if c.setting == "gaussian_noise" and c.defense == "none"]
    records = store.records(cells[0].key)
    store.close()
    assert records is not None and len(records["label"]) == 200 * 2
    assert set(records) == {"psnr", "score", "predicted", "label"}
    assert np.all((records["score"] >= 0) & (records["score"] <= 1))
    report = result.report_md.read_text()
    for section in (
        "Input quality",
        "Per-class precision and recall",
        "Relative improvement",
        "mCE",
        "PSNR vs score",
    ):
        assert section in report, section


def test_run_studies_refuses_an_unknown_study_name_before_any_work(tmp_path: Path) -> None:
    from robustlab.errors import ConfigError
    from robustlab.study.runner import run_studies

    path = tmp_path / "two.yaml"
    path.write_text(
        "name: first\ndataset: {name: mnist-sample}\n"
        "models: [{name: cnn, architecture: lin2022_cnn, epochs: [1]}]\n"
        "---\nname: second\nbase: first\n"
    )
    with pytest.raises(ConfigError, match=r"no study named third.*its studies: first, second"):
        run_studies(path, only=["third"], run_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
