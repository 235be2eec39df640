"""Bring your own model: TorchScript, module:factory + weights, and the errors that explain."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from robustlab.errors import ModelError
from robustlab.models import ExternalSource, create_model, load_external_model
from robustlab.models.external import (
    Normalized,
    build_from_factory,
    factory_code_digest,
    file_digest,
    read_state_dict,
    resolve_factory,
)

NETS = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, channels: int = 1, side: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.head = nn.Linear(4 * side * side, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def make_net(channels=1, side=8, classes=3):
    return TinyNet(channels, side, classes)


def make_pair(channels=1, side=8, classes=3):
    net = TinyNet(channels, side, classes)
    return nn.ModuleDict({"a": net})


class TupleNet(TinyNet):
    def forward(self, x):
        return super().forward(x), x


def make_tuple():
    return TupleNet()


def make_string():
    return "not a model"


def broken():
    raise ValueError("the factory is broken")


NOT_CALLABLE = 3
"""


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``user_nets`` importable by name, also usable as ``path/user_nets.py``."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "user_nets.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(folder))
    return folder / "user_nets.py"


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resolve_factory("user_nets:make_net")().eval()  # type: ignore[no-any-return]


def test_factory_with_safetensors_and_torch_weights(nets: Path, tmp_path: Path) -> None:
    net = _tiny()
    x = torch.rand(5, 1, 8, 8)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        for reference in ("user_nets:make_net", f"{nets}:make_net", "user_nets:TinyNet"):
            model = load_external_model(
                factory=reference,
                weights=tmp_path / weights,
                image_shape=(1, 8, 8),
                num_classes=3,
            )
            assert not model.training
            assert torch.equal(model(x), net(x))


def test_wrapped_and_data_parallel_state_dicts_are_unwrapped(nets: Path, tmp_path: Path) -> None:
    net = _tiny()
    state = net.state_dict()
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "wrapped.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    for name in ("wrapped.pt", "dp.pth"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_declared_normalisation_is_applied_in_front(nets: Path, tmp_path: Path) -> None:
    net = _tiny()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    model = load_external_model(
        factory="user_nets:make_net", weights=tmp_path / "w.pt", mean=[0.5], std=[0.25]
    )
    assert isinstance(model, Normalized)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(model(x), net((x - 0.5) / 0.25))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_round_trip_with_normalisation(nets: Path, tmp_path: Path) -> None:
    net = _tiny()
    torch.jit.script(net).save(str(tmp_path / "net.ts"))  # type: ignore[no-untyped-call]
    x = torch.rand(4, 1, 8, 8)
    plain = load_external_model(torchscript=tmp_path / "net.ts", image_shape=(1, 8, 8))
    assert torch.allclose(plain(x), net(x))
    normed = load_external_model(torchscript=tmp_path / "net.ts", mean=[0.2], std=[0.5])
    assert torch.allclose(normed(x), net((x - 0.2) / 0.5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factory": "user_nets"}, "not a reference to a callable"),
        ({"factory": "no_such_module_xyz:make"}, "cannot import module 'no_such_module_xyz'.*PYTHONPATH"),
        ({"factory": "user_nets:make_nett"}, "no attribute 'make_nett'.*make_net"),
        ({"factory": "user_nets:NOT_CALLABLE"}, "is a int, not callable"),
        ({"factory": "user_nets:make_net", "factory_params": {"colour": 1}}, "colour.*signature is"),
        ({"factory": "user_nets:broken"}, "raised ValueError: the factory is broken"),
        ({"factory": "user_nets:make_string"}, "returned a str; robustlab needs a torch.nn.Module"),
        ({"factory": "missing/nets.py:make"}, "factory file missing/nets.py does not exist"),
        ({"factory": "user_nets:make_net", "weights": "nowhere.pt"}, "weights file nowhere.pt does not exist"),
        ({"torchscript": "nowhere.ts"}, "TorchScript file nowhere.ts does not exist"),
        ({}, "exactly one of torchscript"),
    ],
)  # fmt: skip
def test_loading_errors_name_the_problem(nets: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_external_model(**kwargs)  # type: ignore[arg-type]


def test_weights_that_do_not_fit_list_the_keys(nets: Path, tmp_path: Path) -> None:
    other = resolve_factory("user_nets:make_pair")()
    torch.save(other.state_dict(), tmp_path / "pair.pt")
    with pytest.raises(ModelError) as err:
        load_external_model(factory="user_nets:make_net", weights=tmp_path / "pair.pt")
    message = str(err.value)
    assert "missing keys (in the model, not the file): conv.weight, conv.bias" in message
    assert "unexpected keys (in the file, not the model): a.conv.weight" in message
    torch.save(_tiny().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"shape mismatches.*head.weight \(3, 256\) vs \(5, 256\)"):
        load_external_model(
            factory="user_nets:make_net", factory_params={"classes": 5}, weights=tmp_path / "w.pt"
        )


def test_pickled_models_and_non_weights_are_refused(nets: Path, tmp_path: Path) -> None:
    torch.save(_tiny(), tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(ModelError, match="does not unpickle"):
        read_state_dict(tmp_path / "whole.pt")
    (tmp_path / "junk.bin").write_bytes(b"certainly not weights")
    with pytest.raises(ModelError, match=r"neither a safetensors file nor a torch\.save file"):
        read_state_dict(tmp_path / "junk.bin")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_file_that_is_not_torchscript(nets: Path, tmp_path: Path) -> None:
    torch.save(_tiny().state_dict(), tmp_path / "state.pt")
    with pytest.raises(ModelError, match=r"is not a TorchScript file.*give factory \+ weights"):
        load_external_model(torchscript=tmp_path / "state.pt")


def test_probe_reports_shapes_and_the_fix(nets: Path, tmp_path: Path) -> None:
    torch.save(_tiny().state_dict(), tmp_path / "w.pt")
    common = {"factory": "user_nets:make_net", "weights": tmp_path / "w.pt"}
    with pytest.raises(ModelError, match=r"logits of shape \(2, 3\).*needs \(2, 10\)"):
        load_external_model(**common, image_shape=(1, 8, 8), num_classes=10)  # type: ignore[arg-type]
    with pytest.raises(
        ModelError, match=r"dummy batch of shape \(2, 3, 32, 32\) failed.*3-channel 32x32"
    ):
        load_external_model(**common, image_shape=(3, 32, 32), num_classes=3)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="declares 3 values but the images have 1 channel"):
        load_external_model(
            **common,  # type: ignore[arg-type]
            mean=[0.1, 0.2, 0.3],
            std=[1.0, 1.0, 1.0],
            image_shape=(1, 8, 8),
        )
    with pytest.raises(ModelError, match="returned a tuple"):
        load_external_model(factory="user_nets:make_tuple", image_shape=(1, 8, 8))


def test_source_hashes_identify_contents(nets: Path, tmp_path: Path) -> None:
    torch.save(_tiny(0).state_dict(), tmp_path / "w.pt")
    first = ExternalSource.locate(factory="user_nets:make_net", weights=str(tmp_path / "w.pt"))
    assert first.digest == file_digest(tmp_path / "w.pt") and len(first.digest) == 64
    assert first.code_digest == file_digest(nets)
    model = first.load((1, 8, 8), 3)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    torch.save(_tiny(1).state_dict(), tmp_path / "w.pt")  # new weights, same name
    second = ExternalSource.locate(factory="user_nets:make_net", weights=str(tmp_path / "w.pt"))
    assert second.digest != first.digest and second.key() != first.key()
    with pytest.raises(ModelError, match="changed after the study was planned"):
        first.load()
    # Moving the file changes nothing that the results depend on.
    (tmp_path / "w.pt").rename(tmp_path / "moved.pt")
    moved = ExternalSource.locate(factory="user_nets:make_net", weights=str(tmp_path / "moved.pt"))
    assert moved.key() == second.key()
    assert moved.card()["sha256"] == second.digest and moved.card()["pretrained"] is True


def test_editing_a_factory_file_reimports_it_and_changes_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "arch.py"
    path.write_text("from torch import nn\ndef make():\n    return nn.Linear(4, 2)\n")
    before = factory_code_digest(f"{path}:make")
    assert build_from_factory(f"{path}:make").out_features == 2  # type: ignore[attr-defined]
    path.write_text("from torch import nn\ndef make():\n    return nn.Linear(4, 3)\n")
    assert factory_code_digest(f"{path}:make") != before
    assert build_from_factory(f"{path}:make").out_features == 3  # type: ignore[attr-defined]


def test_external_factory_architecture_for_training(nets: Path) -> None:
    net = create_model(
        "external_factory",
        reference="user_nets:make_net",
        params={"classes": 4},
        mean=[0.5],
        std=[0.5],
    )
    assert isinstance(net, Normalized)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    assert set(net.state_dict()) == {
        "normalize.mean",
        "normalize.std",
        "model.conv.weight",
        "model.conv.bias",
        "model.head.weight",
        "model.head.bias",
    }
