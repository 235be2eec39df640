from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.study.progress import RichProgress

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "degrade", "list", "report"):
        assert command in result.output


def test_list_shows_every_registry_with_parameters() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for text in (
        "mnist-sample",
        "fashion-mnist",
        "lin2022_cnn",
        "salt_pepper",
        "amount",
        "median",
        "size",
    ):
        assert text in result.output


def _png(path: Path, mode: str) -> Path:
    rng = np.random.default_rng(0)
    shape = (20, 24) if mode == "L" else (20, 24, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_degrade_writes_an_image_of_the_same_size(tmp_path: Path, mode: str) -> None:
    source = _png(tmp_path / "in.png", mode)
    out = tmp_path / "out" / "noisy.png"
    result = runner.invoke(
        app,
        ["degrade", str(source), "-d", "gaussian_noise:sigma=0.1", "-d", "salt_pepper:amount=0.2",
         "--defense", "median:size=3", "--seed", "4", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size == (24, 20) and img.mode == mode
        first = np.asarray(img)
    runner.invoke(
        app,
        ["degrade", str(source), "-d", "gaussian_noise:sigma=0.1", "-d", "salt_pepper:amount=0.2",
         "--defense", "median:size=3", "--seed", "4", "-o", str(tmp_path / "again.png")],
    )  # fmt: skip
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again.png")))


def test_degrade_salt_pepper_only_sets_extremes(tmp_path: Path) -> None:
    source = tmp_path / "grey.png"
    Image.fromarray(np.full((30, 30), 128, dtype=np.uint8)).save(source)
    out = tmp_path / "sp.png"
    result = runner.invoke(
        app, ["degrade", str(source), "-d", "salt_pepper:amount=0.5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    values = set(np.unique(np.asarray(Image.open(out))).tolist())
    assert values == {0, 128, 255}


def test_degrade_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    source = _png(tmp_path / "in.png", "L")
    result = runner.invoke(
        app, ["degrade", str(source), "-d", "blurr", "-o", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 2
    assert "unknown degradation 'blurr'" in result.output
    assert "gaussian_noise" in result.output and "Traceback" not in result.output


def test_degrade_unreadable_input(tmp_path: Path) -> None:
    bogus = tmp_path / "not.png"
    bogus.write_text("hello")
    result = runner.invoke(app, ["degrade", str(bogus), "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 2 and "cannot read image" in result.output


def test_run_reports_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndataset: {name: mnist-sample}\nmodels:\n  - name: m\n    architecture: nope\n"
    )
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.output and "Traceback" not in result.output


def test_report_on_empty_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "results.sqlite" in result.output


def test_progress_lines_keep_square_brackets() -> None:
    console = Console(file=io.StringIO(), width=200)
    RichProgress(console).log("trained slave-e3 (joint_branches(bins=[clean, jpeg], layers=3))")
    output = console.file.getvalue()
    assert "bins=[clean, jpeg]" in output
