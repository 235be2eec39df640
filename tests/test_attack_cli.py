from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.defend import create_defense
from robustlab.models import ModelCard, create_model, load_model, save_model

runner = CliRunner()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = create_model("lin2022_cnn")
    card = ModelCard(architecture="lin2022_cnn", params={}, dataset="mnist-sample")
    return save_model(net, card, tmp_path_factory.mktemp("model") / "cnn")


def _accuracy(output: str, which: str) -> tuple[float, int, int]:
    match = re.search(rf"{which} accuracy:\s+([0-9.]+) \((\d+) of (\d+)\)", output)
    assert match, output
    return float(match.group(1)), int(match.group(2)), int(match.group(3))


@pytest.mark.parametrize(
    ("defense", "protocol"), [(None, "--adaptive"), ("jpeg:quality=50", "--adaptive"),
                              ("median", "--oblivious")]
)  # fmt: skip
def test_attack_writes_checkable_examples(
    saved_model: Path, tmp_path: Path, defense: str | None, protocol: str
) -> None:
    out = tmp_path / "examples.npz"
    args = ["attack", "--model", str(saved_model), "--data", "mnist-sample", "--limit", "12",
            "--attack", "pgd:eps=0.2,steps=3", protocol, "--seed", "3", "--batch-size", "5",
            "--out", str(out)]  # fmt: skip
    if defense:
        args += ["--defense", defense]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    assert {"clean", "adversarial", "labels", "predictions", "clean_predictions"} <= set(arrays)
    clean, adversarial = arrays["clean"], arrays["adversarial"]
    assert clean.dtype == adversarial.dtype == np.float32 and clean.shape == (12, 1, 28, 28)
    assert float(np.abs(adversarial - clean).max()) <= 0.2 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    # the printed numbers are the saved arrays' numbers
    robust, correct, n = _accuracy(result.output, "robust")
    assert n == 12 and correct == int((arrays["predictions"] == arrays["labels"]).sum())
    assert robust == pytest.approx(correct / n, abs=5e-5)
    _clean_acc, clean_correct, _ = _accuracy(result.output, "clean")
    assert clean_correct == int((arrays["clean_predictions"] == arrays["labels"]).sum())
    # and anyone can recompute the predictions from the saved images
    model = load_model(saved_model)
    front = {None: None, "median": create_defense("median"),
             "jpeg:quality=50": create_defense("jpeg", quality=50)}[defense]  # fmt: skip
    with torch.no_grad():
        images = torch.from_numpy(adversarial)
        logits = model(front(images) if front is not None else images)
    assert np.array_equal(logits.argmax(dim=1).numpy(), arrays["predictions"])
    assert str(arrays["protocol"]) == protocol.strip("-")


def test_attack_reports_bad_input(saved_model: Path, tmp_path: Path) -> None:
    base = ["attack", "--model", str(saved_model), "--data", "mnist-sample", "--limit", "4",
            "--out", str(tmp_path / "x.npz")]  # fmt: skip
    result = runner.invoke(app, [*base, "--attack", "pgd:eps=-1"])
    assert result.exit_code == 2 and "eps must be a finite number >= 0" in result.output
    result = runner.invoke(app, [*base, "--attack", "pgdd"])
    assert result.exit_code == 2 and "unknown attack 'pgdd'" in result.output
    result = runner.invoke(app, [*base, "--attack", "pgd", "--defense", "jpg"])
    assert result.exit_code == 2 and "unknown defence 'jpg'" in result.output
    assert "Traceback" not in result.output


def test_attack_prints_sanity_flags(saved_model: Path, tmp_path: Path) -> None:
    # One tiny step cannot fool a model at eps 0.5: the large-eps flag must say so. The
    # untrained model still gets some of the 40 images right (its favourite class), so the
    # flag has survivors to report.
    def attack(eps: float) -> tuple[str, int, int]:
        result = runner.invoke(
            app,
            ["attack", "--model", str(saved_model), "--data", "mnist-sample", "--limit", "40",
             "--attack", f"pgd:eps={eps},steps=1,step_size=0.0001,random_start=false",
             "--out", str(tmp_path / "y.npz")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        _, correct, n = _accuracy(result.output, "robust")
        return result.output, correct, n

    output, correct, n = attack(0.5)
    assert correct > 0
    assert "sanity flag [large-eps]" in output
    assert f"keeps {correct} of {n} images right at linf eps=0.5" in " ".join(output.split())
    # the same survivors at a budget that cannot reach every image are no sign of a weak attack
    output, correct, _ = attack(0.3)
    assert correct > 0 and "[large-eps]" not in output


def test_list_shows_attacks() -> None:
    result = runner.invoke(app, ["list", "attacks"])
    assert result.exit_code == 0 and "pgd" in result.output and "rel_step_size" in result.output
