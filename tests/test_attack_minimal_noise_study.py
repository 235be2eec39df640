"""The minimal-noise search on a trained MNIST model and inside a study (slow: trains models)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from robustlab.attack.minimal_noise import GeneticParams, SzegedyParams, minimal_noise_search
from robustlab.data.datasets import load_dataset
from robustlab.seeding import make_generator
from robustlab.study.config import parse_config
from robustlab.study.minimal_noise_runner import META_KEY
from robustlab.study.runner import run_study
from robustlab.study.store import STORE_NAME, ResultsStore
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe

pytestmark = pytest.mark.slow


def test_quickstart_model_is_fooled_on_95_percent_of_100_images(model_cache: Path) -> None:
    """Acceptance: the quickstart CNN (lin2022_cnn, mnist-sample, Adam 1e-3, 15 epochs)."""
    dataset = load_dataset("mnist-sample")
    recipe = TrainingRecipe(
        architecture="lin2022_cnn",
        dataset="mnist-sample",
        epochs=15,
        batch_size=100,
        learning_rate=1e-3,
    )
    model = ModelCache(model_cache).get_or_train(recipe, dataset).model.eval()
    images, labels = next(dataset.test.subset(100).batches(100))
    began = time.perf_counter()
    ga = minimal_noise_search(
        model,
        images,
        labels,
        method="ga",
        generator=make_generator(0),
        ga=GeneticParams(population=20, generations=40),
    )
    ga_seconds = time.perf_counter() - began
    szegedy = minimal_noise_search(
        model, images, labels, method="szegedy", szegedy=SzegedyParams(steps=50, rounds=5)
    )
    for result in (ga, szegedy):
        summary = result.summary()
        print(result.method, {k: round(v, 4) for k, v in summary.items()})
        assert result.success.mean() >= 0.95
        assert summary["success_rate"] >= 0.95  # of the images classified correctly
    print(f"ga wall time {ga_seconds:.1f} s")
    # The paper's argument: its objective stops at the boundary, Szegedy's overshoots it.
    assert ga.summary()["mean_margin"] < 0.05 < szegedy.summary()["mean_margin"]
    assert (ga.forward_passes == 20 + ga.iterations * 19).all()


def _study(tmp_path: Path, generations: int) -> dict[str, object]:
    return {
        "name": "min-noise-demo",
        # Enough training (40 steps) that the model classifies most test digits correctly:
        # the search only attacks those, and the report's PSNR figure needs some flipped.
        "dataset": {"name": "mnist-sample", "train_limit": 1000, "test_limit": 40},
        "models": [
            {
                "name": "cnn",
                "architecture": "lin2022_cnn",
                "epochs": [2],
                "batch_size": 50,
                "learning_rate": 1e-3,
            }
        ],
        "minimal_noise": {
            "images": 6,
            "ga": {"population": 8, "generations": generations},
            "szegedy": {"steps": 4, "rounds": 2},
            "examples": 2,
        },
        "output": str(tmp_path / "run"),
    }


def test_study_section_runs_stores_resumes_and_reports(tmp_path: Path) -> None:
    config = parse_config(_study(tmp_path, generations=3))
    result = run_study(config, device="cpu", cache=ModelCache(tmp_path / "cache"))
    run = result.run_dir
    assert (result.searches_run, result.searches_total) == (2, 2)
    files = {p.name: p.stat().st_mtime_ns for p in (run / "minimal_noise").iterdir()}
    assert set(files) == {"cnn-e2--ga.npz", "cnn-e2--szegedy.npz"}
    with (run / "minimal_noise.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["method"] for r in rows} == {"ga", "szegedy"}
    assert all(0 <= int(r["label"]) <= 9 for r in rows)
    attacked = [r for r in rows if r["clean_class"] == r["label"]]
    assert len(attacked) >= 6  # of 12: the model is not degenerate
    assert any(r["success"] == "1" and r["new_class"] != r["label"] for r in attacked)
    assert {r["forward_passes"] for r in rows if r["method"] == "szegedy"} == {"11"}
    report = result.report_md.read_text()
    assert "## Minimal noise" in report and "Szegedy" in report
    assert (run / "report_files" / "minimal-noise-psnr-cnn-e2.png").is_file()
    store = ResultsStore(run / STORE_NAME)
    try:
        entries = store.get_meta(META_KEY)
    finally:
        store.close()
    assert set(entries) == {"cnn-e2/ga", "cnn-e2/szegedy"}

    # A rerun computes nothing; a changed GA setting reruns the GA job alone.
    again = run_study(config, device="cpu", cache=ModelCache(tmp_path / "cache"))
    assert again.searches_run == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "minimal_noise").iterdir()} == files
    changed = parse_config(_study(tmp_path, generations=4))
    assert run_study(changed, device="cpu", cache=ModelCache(tmp_path / "cache")).searches_run == 1
    after = {p.name: p.stat().st_mtime_ns for p in (run / "minimal_noise").iterdir()}
    assert after["cnn-e2--szegedy.npz"] == files["cnn-e2--szegedy.npz"]
    assert after["cnn-e2--ga.npz"] != files["cnn-e2--ga.npz"]
    with (run / "minimal_noise.csv").open() as f:
        ga_rows = [r for r in csv.DictReader(f) if r["method"] == "ga"]
    assert {int(r["iterations"]) for r in ga_rows} == {4}  # patience 50 never stops it early


def test_fmn_joins_the_section_as_a_method_beside_ga_and_szegedy(tmp_path: Path) -> None:
    """Any registered minimum-norm attack is a method of the section, in the same table."""
    study = _study(tmp_path, generations=3)
    section = study["minimal_noise"]
    assert isinstance(section, dict)
    section["methods"] = ["ga", "fmn"]
    section["params"] = {"fmn": {"steps": 30}}
    result = run_study(parse_config(study), device="cpu", cache=ModelCache(tmp_path / "cache"))
    with (result.run_dir / "minimal_noise.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "fmn"]
    attacked = [r for r in rows if r["clean_class"] == r["label"]]
    assert len(rows) == 6 and attacked
    # FMN flips what it reports as flipped, with an L2 perturbation of a digit's size.
    flipped = [r for r in attacked if r["success"] == "1"]
    assert flipped and all(r["new_class"] != r["label"] for r in flipped)
    assert all(0 < float(r["norm_l2"]) < 10 for r in flipped)
    assert {r["forward_passes"] for r in rows} == {"31"}
    report = result.report_md.read_text()
    assert "FMN (Pintor et al. 2021)" in report
    with pytest.raises(Exception, match="not a minimum-norm attack"):
        parse_config({**study, "minimal_noise": {**section, "methods": ["pgd"], "params": {}}})
