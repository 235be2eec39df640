"""End to end: a study on ``folder:PATH`` images, in memory and streamed, through run_study."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import robustlab
from robustlab.study.config import parse_config
from robustlab.study.store import STORE_NAME, ResultsStore


def _write_digits_like(top: Path, classes: int = 10, per_class: int = 30) -> None:
    """28x28 grey PNGs; class k has a bright band at rows 2k+4..2k+5, so it can be learnt."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = top / f"class-{k}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (28, 28), dtype=np.uint8)
            pixels[2 * k + 4 : 2 * k + 6, 4:24] = 255
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def _study(folder: Path, stream: bool, output: Path) -> dict[str, Any]:
    return {
        "name": f"folder-{'stream' if stream else 'memory'}",
        "seed": 1,
        "dataset": {"name": f"folder:{folder}", "params": {"stream": stream, "workers": 0}},
        "models": [
            {
                "name": "cnn",
                "architecture": "lin2022_cnn",
                "params": {"image_size": 28},
                "epochs": [1],
                "batch_size": 16,
                "learning_rate": 0.005,
            }
        ],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.1]}}],
        "defenses": ["none", "median"],
        "batch_size": 25,
        "examples": 4,
        "output": str(output),
    }


@pytest.mark.slow
def test_folder_study_runs_in_memory_and_streamed_with_equal_results(tmp_path: Path) -> None:
    images = tmp_path / "x"
    _write_digits_like(images)
    results = {}
    for stream in (False, True):
        config = parse_config(_study(images, stream, tmp_path / f"run-{stream}"))
        run = robustlab.run_study(config, device="cpu")
        assert run.cells_run == run.cells_total == 2 * 2  # (clean + noise) x 2 defences
        with run.results_csv.open() as f:
            rows = list(csv.DictReader(f))
        assert {int(r["n"]) for r in rows} == {60}  # 6 of 30 per class in the test split
        results[stream] = [(r["defense"], r["degradation"], r["errors"]) for r in rows]
        store = ResultsStore(run.run_dir / STORE_NAME)
        try:
            dataset = store.get_meta("dataset", {})
        finally:
            store.close()
        assert dataset["classes"] == [f"class-{k}" for k in range(10)]
        assert dataset["image_shape"] == [1, 28, 28]
        assert (dataset["train_size"], dataset["test_size"]) == (240, 60)
        assert any("streamed from disk" in n for n in dataset["notes"]) == stream
        clean = [r for r in rows if r["degradation"] == "clean" and r["defense"] == "none"]
        assert float(clean[0]["accuracy"]) > 0.3  # the bands are being learnt (chance: 0.1)
        assert "folder dataset" in run.report_md.read_text()
    # Same pixels, same order, same seeds: streaming changes nothing in the numbers.
    assert results[True] == results[False]
