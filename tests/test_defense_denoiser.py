"""``denoiser``: a trained denoiser as an input defence, like ``median``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.defend import DenoiserDefense, create_defense, defended
from robustlab.errors import ConfigError, InvalidParameterError, ModelError
from robustlab.models import create_model
from robustlab.models.denoised import Denoised
from robustlab.models.denoisers import Denoiser
from robustlab.models.store import ModelCard, save_model
from robustlab.study.config import parse_config
from robustlab.study.runner import run_study
from robustlab.study.store import ResultsStore


def _card(architecture: str, params: dict[str, Any]) -> ModelCard:
    return ModelCard(architecture=architecture, params=params, dataset="mnist")


def test_the_defence_is_the_denoisers_output_through_the_chosen_head() -> None:
    torch.manual_seed(0)
    network = Denoiser(1, 28, width=4, heads=2)
    x = torch.rand(3, 1, 28, 28)
    defence = DenoiserDefense(network, head=1, trained_for="cnn-e3")
    assert torch.equal(defence(x), network.eval()(x, head=1))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    # In front of a classifier it is the denoised composite, logit for logit.
    assert torch.equal(defended(classifier, defence)(x), Denoised(network, classifier, 1)(x))
    defence.train()
    assert not defence.network.training, "a defence's network stays in eval mode"
    assert not any(p.requires_grad for p in defence.parameters())
    with pytest.raises(InvalidParameterError, match="head 2 does not exist"):
        DenoiserDefense(network, head=2)
    with pytest.raises(InvalidParameterError, match="Denoiser has none"):
        DenoiserDefense(network, output="sl")


def test_a_saved_denoiser_loads_by_path_and_other_files_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    params = {"in_channels": 1, "image_size": 28, "width": 4}
    network = create_model("huang2021_denoiser", **params).eval()
    path = save_model(network, _card("huang2021_denoiser", params), tmp_path / "den")
    x = torch.rand(2, 1, 28, 28)
    loaded = create_defense("denoiser", path=str(path))
    assert torch.equal(loaded(x), network(x))
    assert torch.equal(create_defense("denoiser", path=str(tmp_path / "den.json"))(x), network(x))
    cnn = save_model(create_model("lin2022_cnn"), _card("lin2022_cnn", {}), tmp_path / "cnn")
    with pytest.raises(InvalidParameterError, match="holds a lin2022_cnn, not a denoiser"):
        create_defense("denoiser", path=str(cnn))
    with pytest.raises(ModelError, match="no saved model"):
        create_defense("denoiser", path=str(tmp_path / "missing.safetensors"))
    with pytest.raises(InvalidParameterError, match=r"exactly one of path= .* or model="):
        create_defense("denoiser")
    with pytest.raises(InvalidParameterError, match="only that study can provide"):
        create_defense("denoiser", model="filt-e5")
    with pytest.raises(InvalidParameterError, match="output must be fused, sl or m"):
        create_defense("denoiser", path=str(path), output="best")
    with pytest.raises(InvalidParameterError, match="0-255"):
        loaded(torch.full((1, 1, 28, 28), 200.0))


def _study(tmp: Path, defence: Any, name: str = "den-defence") -> dict[str, Any]:
    noise = {"degradation": "gaussian_noise", "levels": {"low": 0.1, "high": 0.5}}
    quick = {"batch_size": 50, "learning_rate": 0.001}
    return {
        "name": name,
        "dataset": {"name": "mnist-sample", "test_limit": 200},
        "models": [
            {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1], **quick},
            {"name": "nf", "architecture": "huang2021_denoiser", "parent": "cnn-e1",
             "params": {"in_channels": 1, "image_size": 28, "width": 4},
             "strategy": {"name": "denoise", "params": {"perturbation": noise}},
             "epochs": [1], **quick},
            {"name": "cnn-nf", "denoised": {"denoiser": "nf-e1", "model": "cnn-e1"}},
        ],
        "defenses": ["none", "median", defence],
        "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.4]}}],
        "attacks": [{"name": "pgd", "params": {"steps": 5, "rel_step_size": 0.25},
                     "grid": {"eps": [0.1]}, "protocols": ["oblivious", "adaptive"]}],
        "batch_size": 200,
        "output": str(tmp / name),
    }  # fmt: skip


def test_the_study_checks_the_denoiser_a_defence_names(tmp_path: Path) -> None:
    config = parse_config(_study(tmp_path, "denoiser:model=nf-e1"))
    assert [d.label for d in config.defenses] == ["none", "median", "denoiser(nf-e1)"]
    with pytest.raises(ConfigError, match="model 'cnn-e1' must be a denoiser"):
        parse_config(_study(tmp_path, "denoiser:model=cnn-e1"))
    with pytest.raises(ConfigError, match=r"'nf-e9' is not a model id of this study.*nf-e1"):
        parse_config(_study(tmp_path, "denoiser:model=nf-e9"))
    with pytest.raises(ConfigError, match="head 1 does not exist"):
        parse_config(_study(tmp_path, "denoiser:model=nf-e1,head=1"))


@pytest.mark.slow
def test_a_studys_denoiser_defends_every_model_as_its_denoised_composite_does(
    tmp_path: Path,
) -> None:
    result = run_study(parse_config(_study(tmp_path, "denoiser:model=nf-e1")))
    assert result.trained.count("nf-e1") == 1
    store = ResultsStore(result.run_dir / "results.sqlite")
    cells = {(r.kind, r.model, r.defense, r.setting, r.protocol): r for r in store.cells()}
    front = "denoiser(nf-e1)"
    # The defence in front of cnn-e1 computes what the denoised composite computes: the same
    # noisy images, the same denoised images, the same predictions.
    for kind, setting, protocol in [
        ("degradation", "gaussian_noise", ""),
        ("degradation", "clean", ""),
        ("attack", "pgd", "oblivious"),
        ("attack", "pgd", "adaptive"),
    ]:
        as_defence = cells[(kind, "cnn-e1", front, setting, protocol)]
        as_model = cells[(kind, "cnn-nf", "none", setting, protocol)]
        assert as_defence.accuracy == as_model.accuracy, (kind, setting, protocol)
        if kind == "degradation":
            assert as_defence.metrics["confusion"] == as_model.metrics["confusion"]
    noisy = {d: cells[("degradation", "cnn-e1", d, "gaussian_noise", "")] for d in ["none", front]}
    assert noisy[front].accuracy > noisy["none"].accuracy + 0.05, "it learned the noise"
    # The denoiser also stands in front of a model it was not trained for.
    assert ("degradation", "cnn-nf", front, "gaussian_noise", "") in cells
    report = result.report_md.read_text()
    assert "trained denoiser nf-e1" in report and "trained for cnn-e1" in report
    store.close()
    again = run_study(parse_config(_study(tmp_path, "denoiser:model=nf-e1")))
    assert again.cells_run == 0 and again.trained == []
    # The composite dropped from the study leaves its report, though the store still knows it.
    assert "Classifiers behind a denoiser" in again.report_md.read_text()
    without = _study(tmp_path, "denoiser:model=nf-e1")
    without["models"] = without["models"][:2]
    assert (
        "Classifiers behind a denoiser"
        not in run_study(parse_config(without)).report_md.read_text()
    )

    # The same network loaded from its file (a path from models.json) gives the same cells.
    path = json.loads((result.run_dir / "models.json").read_text())["nf-e1"]["path"]
    by_path = run_study(parse_config(_study(tmp_path, f"denoiser:path={path}", "by-path")))
    other = ResultsStore(by_path.run_dir / "results.sqlite")
    loaded = {(r.kind, r.model, r.setting, r.protocol): r.accuracy for r in other.cells()
              if r.defense == "denoiser"}  # fmt: skip
    other.close()
    for (kind, model, defence, setting, protocol), row in cells.items():
        if defence == front:
            assert loaded[(kind, model, setting, protocol)] == row.accuracy
