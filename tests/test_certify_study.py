"""Randomised smoothing inside a study (the ``certify:`` part) and ``robustlab certify``."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustlab.certify import certify
from robustlab.certify.radii import largest_radius
from robustlab.cli import app
from robustlab.defend import create_defense, defended
from robustlab.errors import ConfigError
from robustlab.models import ModelCard, create_model, save_model
from robustlab.seeding import derive_seed, make_generator
from robustlab.study.certify_runner import CSV_COLUMNS, CSV_NAME, KIND, CertifyJob
from robustlab.study.config import parse_config
from robustlab.study.parts import CSV_COLUMNS as RESULTS_COLUMNS
from robustlab.study.plan import plan_models
from robustlab.study.runner import prepare_dataset, run_study
from robustlab.study.store import STORE_NAME, ResultsStore
from robustlab.train.cache import ModelCache

runner = CliRunner()
IMAGES, N0, N = 12, 20, 200


def _study(tmp_path: Path, **certify: Any) -> dict[str, Any]:
    return {
        "name": "certify-demo",
        "dataset": {"name": "mnist-sample", "train_limit": 2000, "test_limit": 40},
        "models": [
            {
                "name": "cnn",
                "architecture": "lin2022_cnn",
                "epochs": [1],
                "batch_size": 50,
                "learning_rate": 1e-3,
            }
        ],
        "defenses": ["none", "median"],  # two fixes: the leaderboard is shown
        "certify": {
            "sigma": [0.25, 0.5],
            "n0": N0,
            "n": N,
            "images": IMAGES,
            "batch_size": 500,
            **certify,
        },
        "output": str(tmp_path / "run"),
    }


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _run(tmp_path: Path, **certify: Any) -> Any:
    config = parse_config(_study(tmp_path, **certify))
    return run_study(config, device="cpu", cache=ModelCache(tmp_path / "cache"))


def test_study_certifies_reports_and_resumes(tmp_path: Path) -> None:
    result = _run(tmp_path)
    run = result.run_dir
    assert result.parts["certify"] == (2, 2)

    # certify.csv: one row per model, sigma and image, consistent with the guarantee's cap
    per_image = _read(run / CSV_NAME)
    assert list(per_image[0]) == CSV_COLUMNS and len(per_image) == 2 * IMAGES
    assert {r["sigma"] for r in per_image} == {"0.25", "0.5"}
    for r in per_image:
        radius, prediction = float(r["radius"]), int(r["prediction"])
        assert 0 <= radius <= largest_radius(float(r["sigma"]), N, 0.001) + 1e-6
        assert 0 <= int(r["counts"]) <= N
        assert (prediction == -1) == (radius == 0.0) == (float(r["p_lower"]) <= 0.5)

    # results.csv: one row per model x sigma x report radius, in the shared columns
    rows = [r for r in _read(result.results_csv) if r["kind"] == KIND]
    assert list(rows[0]) == RESULTS_COLUMNS
    radii = sorted({float(r["severity"]) for r in rows})
    assert radii[0] == 0.0 and len(rows) == 2 * len(radii)
    assert {(r["degradation"], r["severity_name"], r["protocol"], r["defense"]) for r in rows} == {
        ("certified", "radius", "", "none")
    }
    curves: dict[str, list[tuple[float, float, int, int]]] = defaultdict(list)
    for r in rows:
        sigma = r["params"].split('"sigma": ')[1].split("}")[0]
        curves[sigma].append((float(r["severity"]), float(r["accuracy"]), int(r["n"]),
                              int(r["errors"])))  # fmt: skip
    for sigma, points in curves.items():
        points.sort()
        accuracies = [a for _, a, _, _ in points]
        assert accuracies == sorted(accuracies, reverse=True)  # non-increasing in the radius
        images = [r for r in per_image if r["sigma"] == sigma]
        abstained = sum(r["prediction"] == "-1" for r in images) / IMAGES
        clean = sum(r["prediction"] == r["label"] for r in images) / IMAGES
        assert accuracies[0] == pytest.approx(clean, abs=1e-6)  # r = 0: smoothed clean accuracy
        assert accuracies[0] <= 1 - abstained + 1e-9
        for radius, accuracy, n, errors in points:  # recomputed from certify.csv
            hits = sum(
                r["prediction"] == r["label"] and float(r["radius"]) >= radius for r in images
            )
            assert (n, errors) == (IMAGES, IMAGES - hits)
            assert accuracy == pytest.approx(hits / IMAGES, abs=1e-6)
    assert max(a for points in curves.values() for _, a, _, _ in points) > 0  # not degenerate

    report = result.report_md.read_text()
    assert "## Certified robustness (randomised smoothing)" in report
    assert "abstentions count as wrong" in report
    assert "Certified robustness (randomised smoothing): the best certified accuracy" in report
    assert "certified L2 r=" in report  # the leaderboard column
    assert (run / "report_files" / "certify-cnn-e1.png").is_file()
    store = ResultsStore(run / STORE_NAME)
    try:
        cells = store.cells(kind=KIND)
        records = {c.key: store.records(c.key) for c in cells}
    finally:
        store.close()
    assert len(cells) == 2 and all(r is not None for r in records.values())

    # A rerun computes nothing and writes the same numbers; new report radii need no rerun.
    before = (run / CSV_NAME).read_text()
    again = _run(tmp_path)
    assert again.parts["certify"] == (0, 2)
    assert (run / CSV_NAME).read_text() == before
    wider = _run(tmp_path, radii=[0, 0.1, 0.2])
    assert wider.parts["certify"] == (0, 2)
    assert {r["severity"] for r in _read(wider.results_csv) if r["kind"] == KIND} == {
        "0.0", "0.1", "0.2"
    }  # fmt: skip
    # A new sigma runs alone; the finished ones keep their numbers.
    more = _run(tmp_path, sigma=[0.25, 0.5, 0.12])
    assert more.parts["certify"] == (1, 3)
    old = [r for r in _read(run / CSV_NAME) if r["sigma"] != "0.12"]
    assert old == list(csv.DictReader(before.splitlines()))


def test_a_killed_run_keeps_finished_jobs_and_every_model_sees_the_same_noise(
    tmp_path: Path,
) -> None:
    config = parse_config(_study(tmp_path))
    cache = ModelCache(tmp_path / "cache")

    class Killed(Exception):
        pass

    def kill(done: object) -> None:  # the degradation part's groups pass; a certify job kills
        if isinstance(done, CertifyJob):
            raise Killed

    with pytest.raises(Killed):
        run_study(config, device="cpu", cache=cache, after_group=kill)
    store = ResultsStore(tmp_path / "run" / STORE_NAME)
    try:
        assert len(store.cells(kind=KIND)) == 1  # the first job was committed before the kill
    finally:
        store.close()
    resumed = run_study(config, device="cpu", cache=cache)
    assert resumed.parts["certify"] == (1, 2)
    # A fresh run directory with the same cached model: identical certificates (seeded noise).
    fresh = run_study(config, device="cpu", cache=cache, run_dir=tmp_path / "fresh")
    assert fresh.parts["certify"] == (2, 2)
    assert (fresh.run_dir / CSV_NAME).read_text() == (resumed.run_dir / CSV_NAME).read_text()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"sigma": [0.25, -0.5]}, "certify.sigma: Value error, every sigma must be a finite"),
        ({"sigma": [0.0]}, "e.g. sigma: [0.25, 0.5]"),
        ({"sigma": []}, "sigma needs at least one noise level"),
        ({"alpha": 1.5}, "certify.alpha: Value error, alpha must lie strictly between 0 and 1"),
        ({"n": 0}, "certify.n: Input should be greater than or equal to 1"),
        ({"radii": [-1]}, "certify.radii: Value error, radii must be finite numbers >= 0"),
        ({"radii": [0, 5.0]}, "radii: [5.0] lie beyond the largest radius n=200 draws"),
        ({"defenses": True}, "certify.defenses: Input should be a valid list"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_study(tmp_path, **change))
    assert expected in str(err.value)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = create_model("lin2022_cnn")
    card = ModelCard(architecture="lin2022_cnn", params={}, dataset="mnist-sample")
    return save_model(net, card, tmp_path_factory.mktemp("model") / "cnn")


def test_certify_command_prints_accuracy_and_writes_per_image_csv(
    saved_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cert.csv"
    args = ["certify", "--model", str(saved_model), "--data", "mnist-sample", "--images", "6",
            "--sigma", "0.25", "--sigma", "0.5", "--n0", "10", "--n", "100", "--batch-size",
            "300", "--radius", "0", "--radius", "0.2", "--device", "cpu", "--quiet", "-o",
            str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "certified accuracy" in result.output and "abstained" in result.output
    assert "r=0.2" in result.output
    rows = _read(out)
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 12
    assert {r["sigma"] for r in rows} == {"0.25", "0.5"}
    radii = np.array([float(r["radius"]) for r in rows])
    assert (radii >= 0).all() and (radii <= largest_radius(0.5, 100, 0.001) + 1e-6).all()
    # deterministic: the same seed gives the same certificates
    again = tmp_path / "again.csv"
    assert runner.invoke(app, [*args[:-1], str(again)]).exit_code == 0
    assert again.read_text() == out.read_text()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--sigma", "-1"], "--sigma: every sigma must be a finite number > 0"),
        (["--alpha", "2"], "--alpha: alpha must lie strictly between 0 and 1"),
        (["--n", "0"], "--n: Input should be greater than or equal to 1"),
        (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
        (["--radius", "9"], "--radius: radii: [9.0] lie beyond the largest radius"),
    ],
)
def test_certify_command_rejects_bad_input_before_any_work(
    tmp_path: Path, option: list[str], expected: str
) -> None:
    # The model file does not exist: the settings are checked before anything is loaded.
    args = ["certify", "--model", str(tmp_path / "missing"), "--data", "mnist-sample", *option]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_model_behind_a_defence_is_smoothed_as_one_classifier(tmp_path: Path) -> None:
    """certify.defenses: the defence sits inside the smoothed classifier (denoised smoothing)."""
    study = _study(tmp_path, sigma=[0.25], defenses=["none", "median"])
    result = run_study(parse_config(study))
    assert result.run_dir is not None
    rows = _read(result.run_dir / "certify.csv")
    assert {r["defense"] for r in rows} == {"none", "median"}
    median = [r for r in rows if r["defense"] == "median"]
    # Recompute the median job independently: same noise seed, the pipeline median -> model.
    config = parse_config(study)
    dataset = prepare_dataset(config, None)
    planned = plan_models(config)[0]
    assert planned.recipe is not None
    model = ModelCache().get_or_train(planned.recipe, dataset).model.eval()
    x, _ = next(dataset.test.subset(IMAGES).batches(IMAGES))
    cert = certify(
        defended(model, create_defense("median")), x, sigma=0.25, n0=N0, n=N,
        generator=make_generator(derive_seed(config.seed, KIND, 0.25)), batch_size=500,
    )  # fmt: skip
    assert [int(r["prediction"]) for r in median] == cert.prediction.tolist()
    assert [int(r["counts"]) for r in median] == cert.counts.tolist()
    report = (result.run_dir / "report.md").read_text()
    assert "denoised smoothing" in report and "| cnn-e1 | median | 0.25 |" in report
    with pytest.raises(ConfigError, match=r"certify\.defenses"):
        parse_config({**study, "certify": {**study["certify"], "defenses": ["jpeg"]}})


@pytest.mark.slow
def test_a_model_trained_on_gaussian_noise_certifies_larger_radii(tmp_path: Path) -> None:
    """Cohen et al.'s point: smoothing certifies well only a model trained under the noise.

    Two lin2022 CNNs on the same 2,000 digits: standard training, and the ``constant``
    strategy with unclipped Gaussian noise of the smoothing's sigma on every image (Cohen et
    al.'s training). Smoothed at sigma 1.0 (at 0.5 both certify alike on MNIST: measured 78 %
    and 77 % at radius 0), the noise-trained one certifies clearly more digits at every radius
    up to 1.0.
    """
    common = {"architecture": "lin2022_cnn", "epochs": [3], "batch_size": 50,
              "learning_rate": 1e-3}  # fmt: skip
    noise = {"degradation": "gaussian_noise", "params": {"clip": False}, "levels": [1.0]}
    study = {
        "name": "certify-noise-trained",
        "dataset": {"name": "mnist-sample", "train_limit": 2000, "test_limit": 60},
        "models": [
            {"name": "standard", **common},
            {
                "name": "noise",
                **common,
                "strategy": {"name": "constant", "params": {"perturbation": noise}},
            },
        ],
        "certify": {"sigma": [1.0], "n0": 50, "n": 500, "images": 60, "radii": [0.0, 0.5, 1.0]},
        "output": str(tmp_path / "run"),
    }
    result = run_study(parse_config(study), device="cpu")
    assert result.run_dir is not None
    by_model: dict[str, dict[float, float]] = defaultdict(dict)
    for row in _read(result.run_dir / "results.csv"):
        if row["kind"] == KIND:
            by_model[row["model"]][float(row["severity"])] = float(row["accuracy"])
    # Measured: 65.0 / 51.7 / 31.7 % against 46.7 / 30.0 / 20.0 % at radius 0 / 0.5 / 1.0.
    for radius, margin in ((0.0, 0.1), (0.5, 0.1), (1.0, 0.05)):
        assert by_model["noise-e3"][radius] >= by_model["standard-e3"][radius] + margin, by_model
