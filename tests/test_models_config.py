"""Study entries for user models: validation, planning (ids, keys) and the provider."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.data.base import Dataset, Split
from robustlab.errors import ConfigError, ModelError
from robustlab.models.external import file_digest
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.config import parse_config
from robustlab.study.plan import make_plan
from robustlab.study.progress import SilentProgress
from robustlab.study.store import ResultsStore
from robustlab.train.cache import ModelCache

ARCH = """
import torch
from torch import nn


def make_net(classes=10, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, classes))
"""


@pytest.fixture
def arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "digits_arch.py").write_text(textwrap.dedent(ARCH))
    monkeypatch.syspath_prepend(str(folder))
    return folder / "digits_arch.py"


@pytest.fixture
def weights(arch: Path, tmp_path: Path) -> Path:
    from digits_arch import make_net  # type: ignore[import-not-found]

    torch.manual_seed(0)
    path = tmp_path / "digits.pt"
    torch.save(make_net().state_dict(), path)
    return path


def _study(models: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "byo",
        "dataset": {"name": "mnist-sample"},
        "models": models,
        "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1]}}],
        **extra,
    }


def test_the_three_sources_validate(weights: Path, tmp_path: Path) -> None:
    cfg = parse_config(
        _study(
            [
                {"name": "trained", "architecture": "lin2022_cnn", "epochs": [1, 2]},
                {
                    "name": "pre",
                    "factory": "digits_arch:make_net",
                    "factory_params": {"hidden": 16},
                    "weights": str(weights),
                    "normalize": {"mean": [0.13], "std": [0.31]},
                },
                {"name": "ts", "torchscript": str(tmp_path / "net.ts")},
                {"name": "mine", "factory": "digits_arch:make_net", "epochs": [3]},
            ],
            baseline_model="pre",
        )
    )
    assert [m.ids() for m in cfg.models] == [
        ["trained-e1", "trained-e2"],
        ["pre"],
        ["ts"],
        ["mine-e3"],
    ]
    assert [m.pretrained for m in cfg.models] == [False, True, True, False]
    assert cfg.models[1].normalize is not None and cfg.models[1].normalize.std == [0.31]


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"name": "m"}, "needs exactly one of architecture.*it gives none"),
        (
            {"name": "m", "architecture": "lin2022_cnn", "torchscript": "x.ts"},
            "it gives architecture and torchscript",
        ),
        ({"name": "m", "factory": "nocolon"}, "not a reference to a callable"),
        ({"name": "m", "torchscript": "x.ts", "weights": "w.pt"}, "weights go with factory"),
        ({"name": "m", "factory": "a:b", "params": {"x": 1}}, "params belong to architecture"),
        (
            {"name": "m", "architecture": "lin2022_cnn", "factory_params": {"x": 1}},
            "factory_params belong to factory",
        ),
        (
            {"name": "m", "architecture": "lin2022_cnn", "normalize": {"mean": [0], "std": [1]}},
            "normalises its input itself",
        ),
        ({"name": "m", "torchscript": "x.ts", "epochs": [5]}, "pretrained.*remove epochs"),
        (
            {"name": "m", "factory": "a:b", "weights": "w.pt", "learning_rate": 0.1},
            "remove learning_rate",
        ),
        (
            {"name": "m", "torchscript": "x.ts", "normalize": {"mean": [0, 0], "std": [1]}},
            "as many std as mean values",
        ),
        ({"name": "m", "torchscript": "x.ts", "normalize": {"mean": [0], "std": [0]}}, "> 0"),
    ],
)
def test_bad_model_entries_are_explained(model: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(_study([model]), "study.yaml")


def test_baseline_model_of_a_pretrained_entry_is_its_name() -> None:
    with pytest.raises(ConfigError, match="valid: ts"):
        parse_config(_study([{"name": "ts", "torchscript": "x.ts"}], baseline_model="ts-e10"))


def test_plan_ids_and_keys_follow_the_weights_content(weights: Path) -> None:
    entry = {"name": "pre", "factory": "digits_arch:make_net", "weights": str(weights)}
    cfg = parse_config(_study([entry, {"name": "cnn", "architecture": "lin2022_cnn"}]))
    plan = make_plan(cfg, "fp")
    pre, cnn = plan.models
    assert (pre.id, pre.recipe, pre.epochs, pre.training) == ("pre", None, None, "pretrained")
    assert pre.source is not None and pre.source.digest == file_digest(weights)
    assert pre.architecture == f"digits_arch:make_net + {weights}"
    # A trained model's key part is its recipe, exactly as before user models existed.
    assert cnn.recipe is not None and cnn.key() == cnn.recipe.model_dump()
    keys = {c.key for c in plan.cells if c.model.id == "pre"}

    from digits_arch import make_net

    torch.manual_seed(1)
    torch.save(make_net().state_dict(), weights)  # new weights under the same name
    again = make_plan(cfg, "fp")
    assert not keys & {c.key for c in again.cells if c.model.id == "pre"}
    assert {c.key for c in plan.cells if c.model.id == "cnn-e10"} == {
        c.key for c in again.cells if c.model.id == "cnn-e10"
    }


def test_plan_of_a_trained_user_architecture_tracks_its_code(arch: Path) -> None:
    cfg = parse_config(
        _study(
            [
                {
                    "name": "mine",
                    "factory": f"{arch}:make_net",
                    "factory_params": {"hidden": 8},
                    "normalize": {"mean": [0.5], "std": [0.5]},
                    "epochs": [1],
                }
            ]
        )
    )
    (model,) = make_plan(cfg, "fp").models
    assert model.id == "mine-e1" and model.recipe is not None
    assert model.recipe.architecture == "external_factory"
    assert model.recipe.params == {
        "reference": f"{arch}:make_net",
        "params": {"hidden": 8},
        "mean": [0.5],
        "std": [0.5],
        "code_digest": file_digest(arch),
    }
    assert model.architecture == f"{arch}:make_net"
    arch.write_text(arch.read_text() + "\n# edited\n")
    (edited,) = make_plan(cfg, "fp").models
    assert edited.recipe is not None
    assert edited.recipe.params["code_digest"] == file_digest(arch)
    assert edited.recipe.params["code_digest"] != model.recipe.params["code_digest"]


def test_plan_fails_early_on_a_missing_file() -> None:
    cfg = parse_config(_study([{"name": "ts", "torchscript": "no/such/file.ts"}]))
    with pytest.raises(ModelError, match=r"TorchScript file no/such/file\.ts does not exist"):
        make_plan(cfg, "fp")


def _digits(n: int = 40) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 255, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    split = Split(pixels, torch.arange(n) % 10)
    return Dataset("toy", split, split, [str(i) for i in range(10)])


def test_provider_loads_and_records_a_pretrained_model(weights: Path, tmp_path: Path) -> None:
    entry = {"name": "pre", "factory": "digits_arch:make_net", "weights": str(weights)}
    (planned,) = make_plan(parse_config(_study([entry])), "fp").models
    store = ResultsStore(tmp_path / "results.sqlite")
    try:
        model = ArtefactProvider(
            _digits(),
            store,
            device=torch.device("cpu"),
            cache=ModelCache(tmp_path / "cache"),
            progress=SilentProgress(),
        ).provide(planned)
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
        record = store.models()["pre"]
        assert record["path"] == str(weights)
        assert record["card"]["sha256"] == file_digest(weights)
    finally:
        store.close()
    assert not (tmp_path / "cache").exists()  # nothing trained, nothing cached


def test_provider_probes_an_architecture_before_training(tmp_path: Path) -> None:
    # A CIFAR-10 network on 28x28 grey digits fails at once, naming the shapes.
    entry = {"name": "cifar", "architecture": "aghdam2016_cifar10", "epochs": [1]}
    (planned,) = make_plan(parse_config(_study([entry])), "fp").models
    store = ResultsStore(tmp_path / "results.sqlite")
    try:
        with pytest.raises(ModelError, match=r"dummy batch of shape \(2, 1, 28, 28\) failed"):
            ArtefactProvider(
                _digits(),
                store,
                device=torch.device("cpu"),
                cache=ModelCache(tmp_path / "cache"),
                progress=SilentProgress(),
            ).provide(planned)
    finally:
        store.close()
