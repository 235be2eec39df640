"""Acceptance: whole studies with a user's own model given as ``module:factory`` + weights."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from robustlab.data.datasets import load_dataset
from robustlab.models.external import resolve_factory
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study

NETS = """
import torch
from torch import nn


def make_net(channels=1, side=28, classes=10, hidden=32):
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * (side // 2) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )
"""


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``user_study_nets.py``: importable by module name, and by its path."""
    folder = tmp_path / "code"
    folder.mkdir()
    path = folder / "user_study_nets.py"
    path.write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(folder))
    return path


def _fit(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float
) -> nn.Module:
    """Train ``net`` on normalised ``images`` outside robustlab, as a user would."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x = (images.float() / 255.0 - mean) / std
    for _ in range(2):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 100):
            index = order[start : start + 100]
            loss = F.cross_entropy(net(x[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return net.eval()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_study_with_a_pretrained_and_a_trained_user_model(nets: Path, tmp_path: Path) -> None:
    data = load_dataset("mnist-sample")
    train = data.train
    net = resolve_factory("user_study_nets:make_net")()
    _fit(net, train.images[:1000], train.labels[:1000], 0.13, 0.31)  # type: ignore[attr-defined]
    save_file(net.state_dict(), str(tmp_path / "digits.safetensors"))

    study: dict[str, Any] = {
        "name": "byo-digits",
        "seed": 1,
        "dataset": {"name": "mnist-sample", "test_limit": 200, "train_limit": 300},
        "models": [
            {
                "name": "mine",
                "factory": "user_study_nets:make_net",
                "weights": str(tmp_path / "digits.safetensors"),
                "normalize": {"mean": [0.13], "std": [0.31]},
            },
            {
                "name": "scratch",
                "factory": f"{nets}:make_net",
                "factory_params": {"hidden": 16},
                "epochs": [1],
                "learning_rate": 0.003,
            },
        ],
        "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1]}}],
        "defenses": ["none", "median"],
        "batch_size": 100,
        "examples": 2,
    }
    config = parse_config(study)
    result = run_study(config, run_dir=tmp_path / "run", device="cpu")
    assert result.cells_total == result.cells_run == 2 * 2 * 2  # models x defences x settings
    rows = _rows(result.results_csv)
    clean = {r["model"]: float(r["accuracy"]) for r in rows if r["degradation"] == "clean"}
    assert set(clean) == {"mine", "scratch-e1"}
    assert clean["mine"] > 0.7  # the user's weights were loaded, normalisation included
    assert {r["epochs"] for r in rows if r["model"] == "mine"} == {""}
    report = result.report_md.read_text()
    assert "| mine | user_study_nets:make_net + " in report and "pretrained" in report

    # A rerun computes nothing; new weights under the same file name recompute their cells only.
    assert run_study(config, run_dir=tmp_path / "run", device="cpu").cells_run == 0
    torch.manual_seed(5)
    save_file(
        resolve_factory("user_study_nets:make_net")().state_dict(),
        str(tmp_path / "digits.safetensors"),
    )
    again = run_study(config, run_dir=tmp_path / "run", device="cpu")
    assert again.cells_run == 2 * 2
    fresh = {r["model"]: float(r["accuracy"]) for r in _rows(again.results_csv)}
    assert fresh["mine"] < 0.5  # untrained weights now


def _shape_image(kind: int, rng: np.random.Generator, side: int = 16) -> np.ndarray:
    """A noisy RGB image with a bright horizontal bar (0), vertical bar (1) or square (2)."""
    image = rng.integers(0, 60, size=(side, side, 3), dtype=np.uint8)
    a = int(rng.integers(2, side - 4))
    colour = rng.integers(180, 256, size=3, dtype=np.uint8)
    if kind == 0:
        image[a : a + 2, 2:-2] = colour
    elif kind == 1:
        image[2:-2, a : a + 2] = colour
    else:
        image[5:11, 5:11] = colour
    return image


@pytest.mark.slow
def test_study_on_a_folder_of_pngs_with_a_user_model(nets: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = ["horizontal", "square", "vertical"]  # sorted: the folder dataset's label order
    kinds = {"horizontal": 0, "vertical": 1, "square": 2}
    arrays: dict[str, list[tuple[np.ndarray, int]]] = {"train": [], "test": []}
    for split, count in (("train", 60), ("test", 20)):
        for label, name in enumerate(classes):
            (tmp_path / "shapes" / split / name).mkdir(parents=True)
            for i in range(count):
                image = _shape_image(kinds[name], rng)
                Image.fromarray(image).save(tmp_path / "shapes" / split / name / f"{i}.png")
                arrays[split].append((image, label))

    images = torch.from_numpy(np.stack([a for a, _ in arrays["train"]])).permute(0, 3, 1, 2)
    labels = torch.tensor([label for _, label in arrays["train"]])
    net = resolve_factory(f"{nets}:make_net")(channels=3, side=16, classes=3)
    _fit(net, images, labels, 0.2, 0.3)
    torch.save(net.state_dict(), tmp_path / "shapes.pt")

    config = parse_config(
        {
            "name": "byo-folder",
            "dataset": {"name": f"folder:{tmp_path / 'shapes'}", "params": {"workers": 0}},
            "models": [
                {
                    "name": "shapes",
                    "factory": f"{nets}:make_net",
                    "factory_params": {"channels": 3, "side": 16, "classes": 3},
                    "weights": str(tmp_path / "shapes.pt"),
                    "normalize": {"mean": [0.2, 0.2, 0.2], "std": [0.3, 0.3, 0.3]},
                }
            ],
            "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.05, 0.3]}}],
            "defenses": ["none", "median"],
            "trials": 2,
            "examples": 3,
        }
    )
    result = run_study(config, run_dir=tmp_path / "run", device="cpu")
    assert result.cells_total == result.cells_run == 2 * (1 + 2 * 2)
    rows = _rows(result.results_csv)
    assert {r["n"] for r in rows} == {"60"}
    clean = {r["defense"]: float(r["accuracy"]) for r in rows if r["degradation"] == "clean"}
    assert clean["none"] > 0.9  # the median filter thins the 2-pixel bars: not checked
    assert "shapes" in result.report_html.read_text()
