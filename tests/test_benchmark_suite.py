"""The table of benchmarks/run_suite.py, built from hand-made benchmark results (nothing runs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "run_suite.py"


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_suite", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_suite"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def degradation(size: str, op: str, impl: str, library: str, rate: float) -> dict[str, Any]:
    return {
        "size": size,
        "operation": op,
        "implementation": impl,
        "library": library,
        "images_per_s": rate,
        "spread": 1.1,
    }


MNIST, RGB = "1x28x28 (MNIST digits)", "3x32x32 (CIFAR-size RGB photo crops)"
RESULTS: dict[str, Any] = {
    "degradations": {
        "n": 1024,
        "rows": [
            degradation(MNIST, "Gaussian blur sigma 1 (9x9)", "robustlab blur", "robustlab", 400.0),
            degradation(
                MNIST, "Gaussian blur sigma 1 (9x9)", "OpenCV GaussianBlur", "opencv", 100.0
            ),
            degradation(
                MNIST, "Gaussian blur sigma 1 (9x9)", "SciPy gaussian_filter", "scipy", 80.0
            ),
            degradation(RGB, "JPEG quality 10", "robustlab jpeg", "robustlab", 75.0),
            degradation(RGB, "JPEG quality 10", "OpenCV imencode/imdecode", "opencv", 100.0),
            degradation(RGB, "box 5x5", "robustlab box defence", "robustlab", 96.0),
            degradation(RGB, "box 5x5", "kornia box_blur", "kornia", 100.0),
        ],
    },
    "pgd": {
        "eps": 0.3,
        "steps": 40,
        "batch": 128,
        "median": {"robustlab": 1.0, "plain": 1.5, "torchattacks": 2.0},
        "times": {"robustlab": [1.0, 1.1], "plain": [1.5, 1.5], "torchattacks": [2.0, 2.2]},
        "accuracy": {"robustlab": 0.0, "plain": 0.0, "torchattacks": 0.0},
    },
    "autoattack": {
        "quickstart": {
            "pgd-40x10/robustlab": {"accuracy": 0.5, "seconds": 9.0},
            "apgd-ce/robustlab": {"accuracy": 0.5, "seconds": 1.0},
            "apgd-ce/torchattacks": {"accuracy": 0.5, "seconds": 1.5},
            "apgd-ce/reference": {"accuracy": 0.55, "seconds": 0.9},
        }
    },
    "composites": {
        "rows": [
            {"composite": "ensemble of 5", "robustlab_s": 1.0, "plain_s": 1.2, "single_s": 0.2}
        ]
    },
    "denoisers": {
        "width": 8,
        "batch": 250,
        "rows": [
            {
                "variant": "additive",
                "median_s": {"infer": 0.4, "bare infer": 0.1, "grad": 1.0, "bare grad": 0.2},
            }
        ],
    },
    "sweep": {
        "study": {"config": "/x/quickstart.yaml", "groups": 19, "defenses": ["none", "box"]},
        "counts": {"model_images": 38000},
        "median_seconds": {"sweep_total": 5.5, "pure_inference": 5.0},
        "samples_seconds": {"sweep_total": [5.5, 5.6], "pure_inference": [5.0, 5.1]},
    },
    "copies": [
        {"copies": 2, "images": 26000, "sweep_s": 3.0, "inference_s": 2.5, "peak_rss_mib": 600.0},
        {
            "copies": 16,
            "images": 208000,
            "sweep_s": 24.0,
            "inference_s": 20.0,
            "peak_rss_mib": 660.0,
        },
        {
            "series": "images",
            "copies": 2,
            "test_images": 500,
            "test_set_mib": 0.37,
            "peak_rss_sweep_mib": 500.0,
            "images": 13000,
            "sweep_s": 1.5,
            "inference_s": 1.2,
            "peak_rss_mib": 520.0,
        },
        {
            "series": "images",
            "copies": 2,
            "test_images": 5000,
            "test_set_mib": 3.7,
            "peak_rss_sweep_mib": 540.0,
            "images": 130000,
            "sweep_s": 15.0,
            "inference_s": 12.0,
            "peak_rss_mib": 580.0,
        },
    ],
    "strategies": {
        "results": [
            {
                "strategy": "standard",
                "clean_images": 500,
                "seconds": {"robustlab": [2.0, 2.2], "plain": [2.4, 2.6]},
            },
            {
                "strategy": "augment",
                "clean_images": 500,
                "seconds": {"robustlab": [5.0], "plain": [4.0]},
            },
            {"strategy": "new_plugin", "clean_images": 500, "seconds": {"robustlab": [5.0]}},
        ]
    },
    "ray": {
        "runs": {
            "local cold": {"seconds": 30.0, "cells": 57},
            "local warm": {"seconds": 10.0, "cells": 57},
            "ray cold": {"seconds": 40.0, "cells": 57},
            "ray warm": {"seconds": 20.0, "cells": 57},
        },
        "startup": 6.0,
        "startup_parts": {"init": 2.5, "first_task": 2.0, "shutdown": 1.5},
        "per_cell": 0.05,
        "per_training": 5.0,
        "identical": True,
    },
}


def rows_by(rows: list[Any], area: str, what: str = "") -> list[Any]:
    return [r for r in rows if r.area == area and what in r.what]


def test_degradations_against_the_fastest_peer(suite: ModuleType) -> None:
    rows = suite.build_table({"degradations": RESULTS["degradations"]})
    (blur,) = rows_by(rows, "degradations", "Gaussian blur")
    assert blur.against == "OpenCV GaussianBlur"  # the fastest of the two peers
    assert blur.ratio == pytest.approx(4.0)  # images/s: robustlab's over the peer's
    assert blur.note == ""  # faster: no note needed
    assert "1x28x28" in blur.what


def test_times_give_reference_over_robustlab(suite: ModuleType) -> None:
    rows = suite.build_table({"pgd": RESULTS["pgd"]})
    ratios = {r.against: r.ratio for r in rows}
    assert ratios == {
        "plain PyTorch loop": pytest.approx(1.5),
        "torchattacks.PGD": pytest.approx(2.0),
    }
    assert all(r.note == "" for r in rows)


def test_every_ratio_below_one_is_explained(suite: ModuleType) -> None:
    rows = suite.build_table(RESULTS, loads={"degradations": 3.2})
    below = [r for r in rows if r.ratio < 1]
    assert {r.area for r in below} == {
        "degradations",
        "autoattack",
        "sweep",
        "copies",
        "strategies",
        "ray",
        "denoisers",
    }
    assert all(r.note for r in below)
    # Documented cases carry the documentation's explanation and the measured context.
    (jpeg,) = rows_by(rows, "degradations", "JPEG")
    assert jpeg.ratio == pytest.approx(0.75)
    assert "PEERS.md" in jpeg.note and "load average 3.2" in jpeg.note
    (augment,) = rows_by(rows, "strategies", "augment")
    assert augment.ratio == pytest.approx(0.8) and "README.md" in augment.note
    # An undocumented case gets a plain statement, flagged as on par when within 5 %.
    (box,) = rows_by(rows, "degradations", "box")
    assert box.note.startswith("slower than kornia box_blur in this run; within 5 %")


def test_floors_executor_and_memory(suite: ModuleType) -> None:
    rows = suite.build_table(RESULTS)
    (sweep,) = rows_by(rows, "sweep")
    assert sweep.kind == "floor" and sweep.ratio == pytest.approx(5.0 / 5.5)
    assert "1.10x pure inference" in sweep.note
    cold, warm = rows_by(rows, "ray")
    assert cold.ratio == pytest.approx(0.75) and warm.ratio == pytest.approx(0.5)
    assert "acceptance <= 1.5x: met" in cold.note
    assert "a rerun from the model cache, above 1.5x" in warm.note
    assert "6.0 s measured alone = ray.init 2.5 s" in warm.note and "50 ms per cell" in warm.note
    assert "per training (5.0 s" in cold.note
    (memory,) = rows_by(rows, "copies", "peak memory (RSS), 16 copies")
    assert memory.ratio == pytest.approx(600 / 660)  # fewest copies' peak over the most's
    assert "8x the copies" in memory.note
    (samples,) = rows_by(rows, "copies", "sweep peak memory (RSS), 5,000 test images")
    assert samples.ratio == pytest.approx(500 / 540)  # the sweep's peak, not the floor's
    assert "10x the images" in samples.note and "0.4 to 3.7 MiB" in samples.note
    mc = rows_by(rows, "copies", "Monte-Carlo")
    assert [r.ratio for r in mc] == [pytest.approx(2.5 / 3.0), pytest.approx(20 / 24)]
    assert "target" not in mc[0].note  # the target is for the most copies
    assert "(target at the most copies <= 1.3x: met)" in mc[1].note


def test_strategies_without_plain_loop_are_left_out(suite: ModuleType) -> None:
    rows = suite.build_table({"strategies": RESULTS["strategies"]})
    assert [r.what.split(":")[0] for r in rows] == ["standard", "augment"]
    assert rows[0].ratio == pytest.approx(2.5 / 2.1)


def test_table_outputs(suite: ModuleType) -> None:
    rows = suite.build_table(RESULTS)
    text = suite.text_table(rows)
    markdown = suite.markdown_table(rows)
    assert text.count("[1]") == 2  # the mark in the table and the footnote
    assert len(markdown.splitlines()) == len(rows) + 2
    assert all(len(line.split(" | ")) == 7 for line in markdown.splitlines()[2:])
    assert rows[0].as_dict()["ratio"] == rows[0].ratio
    one_repeat = rows_by(rows, "strategies", "augment")[0].as_dict()
    assert one_repeat["spread"] == [None, None]  # NaN is not JSON


def test_attacks_composites_and_denoisers(suite: ModuleType) -> None:
    args = {"autoattack": ["bench_autoattack.py", "--images", "32"]}
    rows = suite.build_table(RESULTS, args)
    torchattacks, reference = rows_by(rows, "autoattack")  # robustlab-only rows are left out
    assert torchattacks.ratio == pytest.approx(1.5) and "32 images" in torchattacks.what
    assert torchattacks.note == ""
    assert reference.ratio == pytest.approx(0.9)
    assert reference.note.startswith("slower than reference APGDAttack")
    assert "robust accuracy differs: robustlab 50.0%, reference 55.0%" in reference.note
    (ensemble,) = rows_by(rows, "composites")
    assert ensemble.ratio == pytest.approx(1.2)
    infer, grad = rows_by(rows, "denoisers")
    assert (infer.ratio, grad.ratio) == (pytest.approx(0.25), pytest.approx(0.2))
    assert infer.kind == "floor" and infer.note == grad.note != ""


def test_contention(suite: ModuleType) -> None:
    data = {
        "cpus": 2,
        "contended": {"median 3x3 (robustlab)": 10.0, "median 3x3 (OpenCV)": 50.0, "fwd": 4.0},
        "limited": {"median 3x3 (robustlab)": 100.0, "median 3x3 (OpenCV)": 80.0, "fwd": 8.0},
    }
    rows = suite.build_table({"contention": data})
    assert [r.ratio for r in rows] == [pytest.approx(10.0), pytest.approx(2.0), pytest.approx(1.25)]
    assert rows[-1].against == "OpenCV medianBlur" and "1 free" in rows[0].what
