from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robustlab
from robustlab.errors import ModelError, UnknownNameError
from robustlab.models import ModelCard, Normalize, check_logits, create_model, save_model
from robustlab.models.store import read_card


def test_lin2022_cnn_shapes_and_parameter_count() -> None:
    net = create_model("lin2022_cnn")
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    # conv 1->16 5x5 (416) + conv 16->36 5x5 (14,436) + fc 1764->128 (225,920) + fc 128->10 (1,290)
    assert sum(p.numel() for p in net.parameters()) == 242_062
    assert net.classifier[1].in_features == 1764


def test_lin2022_cnn_rejects_bad_image_size() -> None:
    with pytest.raises(ModelError, match="divisible by 4"):
        create_model("lin2022_cnn", image_size=30)


def test_unknown_model_lists_valid() -> None:
    with pytest.raises(UnknownNameError, match="lin2022_cnn"):
        create_model("resnet9000")


def test_check_logits() -> None:
    check_logits(torch.zeros(4, 10), 4, 10)
    with pytest.raises(ModelError, match=r"\(4, 10\)"):
        check_logits(torch.zeros(4, 9), 4, 10)
    with pytest.raises(ModelError, match="NaN"):
        check_logits(torch.full((4, 10), float("nan")), 4, 10)


def test_normalize() -> None:
    layer = Normalize([0.5], [0.25])
    assert torch.equal(layer(torch.full((1, 1, 2, 2), 1.0)), torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(ModelError):
        Normalize([0.5], [0.0])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    net = create_model("lin2022_cnn", dropout=0.3)
    card = ModelCard(architecture="lin2022_cnn", params={"dropout": 0.3}, dataset="x", epochs=3)
    weights = save_model(net, card, tmp_path / "m")
    assert weights.name == "m.safetensors" and (tmp_path / "m.json").exists()
    for path in (weights, tmp_path / "m.json", tmp_path / "m"):
        loaded = robustlab.load_model(path)
        assert not loaded.training
        x = torch.rand(3, 1, 28, 28)
        assert torch.equal(net.eval()(x), loaded(x))
    assert read_card(weights).epochs == 3


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model card"):
        robustlab.load_model(tmp_path / "missing.safetensors")
    net = create_model("lin2022_cnn")
    save_model(
        net, ModelCard(architecture="lin2022_cnn", params={"num_classes": 7}), tmp_path / "bad"
    )
    with pytest.raises(ModelError, match="do not fit"):
        robustlab.load_model(tmp_path / "bad")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid"):
        robustlab.load_model(tmp_path / "junk")
