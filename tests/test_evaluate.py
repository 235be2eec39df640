"""robustlab.evaluate: a model held in memory, evaluated with no YAML file, as a study would."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

import robustlab
from robustlab.cli import app
from robustlab.data import load_dataset
from robustlab.errors import RobustlabError
from robustlab.models.external import build_from_factory

NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make_net(classes: int = 10) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, classes)
        )
    """
)
DEGRADATIONS = [{"name": "gaussian_noise", "grid": {"sigma": [0.2, 0.4]}}, "salt_pepper:amount=0.1"]
ATTACKS = ["fgsm:eps=8/255", {"name": "pgd", "params": {"steps": 5}, "grid": {"eps": ["16/255"]}}]
DEFENSES = ["none", "median"]
MEAN, STD = [0.1307], [0.3081]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A small CNN trained here for a few seconds on the embedded digits; never saved."""
    folder = tmp_path_factory.mktemp("net")
    (folder / "nets.py").write_text(NET)
    torch.manual_seed(0)
    net = build_from_factory(f"{folder / 'nets.py'}:make_net")
    data = load_dataset("mnist-sample")
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    for x, y in data.train.batches(100, order=order[:2000]):
        optimiser.zero_grad()
        x = (x - MEAN[0]) / STD[0]
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    return net.eval(), folder


def _csv(path: Path) -> str:
    return path.read_text()


def test_evaluate_reproduces_the_equivalent_yaml_study_and_a_second_call_computes_nothing(
    trained: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    net, folder = trained
    result = robustlab.evaluate(
        net, data="mnist-sample", degradations=DEGRADATIONS, attacks=ATTACKS,
        defenses=DEFENSES, normalize=(MEAN, STD), images=100, run_dir=tmp_path / "nb",
    )  # fmt: skip
    rows = result.rows()
    assert {r["kind"] for r in rows} == {"degradation", "attack"}
    clean = next(r for r in rows if r["degradation"] == "clean" and r["defense"] == "none")
    assert clean["accuracy"] > 0.7  # a trained model, evaluated with its normalisation
    attacked = [r for r in rows if r["kind"] == "attack"]
    assert attacked and all(r["accuracy"] < clean["accuracy"] for r in attacked)
    assert result.run.cells_run == result.run.cells_total > 0

    # The same study written by hand: the model's code as a factory, its weights in a file.
    save_file(net.state_dict(), str(folder / "weights.safetensors"))
    study = {
        "name": "by-hand",
        "dataset": {"name": "mnist-sample", "test_limit": 100},
        "models": [{
            "name": "model", "factory": f"{folder / 'nets.py'}:make_net",
            "weights": str(folder / "weights.safetensors"),
            "normalize": {"mean": MEAN, "std": STD},
        }],
        "degradations": DEGRADATIONS, "attacks": ATTACKS, "defenses": DEFENSES,
    }  # fmt: skip
    by_hand = robustlab.run_study(study, run_dir=tmp_path / "yaml")
    assert _csv(by_hand.results_csv) == _csv(result.run.results_csv)

    again = robustlab.evaluate(
        net, data="mnist-sample", degradations=DEGRADATIONS, attacks=ATTACKS,
        defenses=DEFENSES, normalize=(MEAN, STD), images=100, run_dir=tmp_path / "nb",
    )  # fmt: skip
    assert again.run.cells_run == 0 and again.run.cells_total == result.run.cells_total
    assert _csv(again.run.results_csv) == _csv(result.run.results_csv)

    # result.config reruns the study from the command line, with the same numbers.
    (tmp_path / "study.yaml").write_text(result.config)
    cli = CliRunner().invoke(
        app, ["run", str(tmp_path / "study.yaml"), "-o", str(tmp_path / "cli")]
    )
    assert cli.exit_code == 0, cli.output
    assert _csv(tmp_path / "cli" / "results.csv") == _csv(result.run.results_csv)
    assert "8/255" not in result.config or yaml.safe_load(result.config)
    view = result.report()
    assert view.path.is_file() and "<iframe srcdoc=" in view._repr_html_()


def test_evaluate_tensors_and_a_dataloader_give_the_same_rows(
    trained: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    net, _ = trained
    data = load_dataset("mnist-sample").test.subset(64)
    images, labels = next(data.batches(64))
    normalize = (MEAN, STD)
    pair = robustlab.evaluate(
        net, data=(images, labels), degradations="lin2022", normalize=normalize,
        run_dir=tmp_path / "pair",
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=10
    )
    batched = robustlab.evaluate(
        net, data=loader, degradations="lin2022", normalize=normalize, run_dir=tmp_path / "dl"
    )
    assert _csv(pair.run.results_csv) == _csv(batched.run.results_csv)
    assert pair.study.dataset.name.startswith("tensors:")
    # The pixels are kept as given (float32), not rounded to 8 bits.
    stored = load_dataset(pair.study.dataset.name).test
    assert torch.equal(next(stored.batches(64))[0], images)


def test_a_changed_model_is_evaluated_afresh(
    trained: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    net, folder = trained
    images, labels = next(load_dataset("mnist-sample").test.batches(32))
    normalize = (MEAN, STD)
    first = robustlab.evaluate(net, (images, labels), normalize=normalize, run_dir=tmp_path / "r")
    first_rows = _csv(first.run.results_csv)
    other = build_from_factory(f"{folder / 'nets.py'}:make_net")  # untrained
    second = robustlab.evaluate(
        other, (images, labels), normalize=normalize, run_dir=tmp_path / "r"
    )
    assert second.run.cells_run == second.run.cells_total > 0
    assert first_rows != _csv(second.run.results_csv)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model": "net.pt"}, "must be a torch.nn.Module"),
        ({"data": torch.rand(4, 1, 8, 8)}, "single tensor"),
        ({"data": (torch.rand(4, 8, 8), torch.zeros(4, dtype=torch.long))}, "unsqueeze(1)"),
        ({"data": (torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.long))}, "255"),
        ({"data": (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))}, "3 labels"),
        ({"data": (torch.rand(4, 1, 8, 8), torch.zeros(4))}, "integer tensor"),
        ({"data": (torch.rand(4, 1, 9, 9), torch.zeros(4, dtype=torch.long))}, "shape"),
        ({"attacks": ["pgd:eps=8/0"]}, "divides by zero"),
        ({"attacks": [3]}, "spec string"),
        ({"degradations": ["gaussian_noise:sigma=.inf"]}, "finite"),
        ({"defenses": ["median:size=4"]}, "median"),
        ({"data": "mnits"}, "did you mean"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    kwargs: dict[str, object], fragment: str, tmp_path: Path
) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    args: dict[str, object] = {
        "model": net,
        "data": (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])),
        "run_dir": tmp_path / "run",
        **kwargs,
    }
    with pytest.raises(RobustlabError, match=None) as caught:
        robustlab.evaluate(**args)  # type: ignore[arg-type]
    assert fragment.lower() in str(caught.value).lower()
    assert not (tmp_path / "run" / "results.sqlite").exists()
