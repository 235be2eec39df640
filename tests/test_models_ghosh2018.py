"""ghosh2018_mnist: the 28x28 stand-in for VGG-16's fc6-fc8 (ghosh2018 Table 1's DA rows)."""

from __future__ import annotations

import pytest
import torch

from robustlab.errors import ModelError
from robustlab.models import create_model
from robustlab.train.strategies.finetune import Finetune


def conv3(cin: int, cout: int) -> int:
    return cin * cout * 9 + cout


def fc(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def test_shape_and_parameter_count_from_layer_shapes() -> None:
    net = create_model("ghosh2018_mnist")
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    convs = conv3(1, 16) + conv3(16, 16) + conv3(16, 32) + conv3(32, 32)
    fcs = fc(32 * 7 * 7, 256) + fc(256, 256) + fc(256, 10)
    assert sum(p.numel() for p in net.parameters()) == convs + fcs == 486_394


def test_finetune_depths_train_fc8_fc78_fc678() -> None:
    net = create_model("ghosh2018_mnist")
    noise = {"degradation": "gaussian_noise", "levels": [0.1]}
    expected = {1: [net.fc8], 2: [net.fc7, net.fc8], 3: [net.fc6, net.fc7, net.fc8]}
    for layers, modules in expected.items():
        trained = {id(p) for p in Finetune(noise, layers=layers).trainable(net)}
        assert trained == {id(p) for m in modules for p in m.parameters()}


def test_other_sizes_and_bad_parameters() -> None:
    net = create_model("ghosh2018_mnist", in_channels=3, num_classes=5, image_size=32)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ModelError, match="divisible by 4"):
        create_model("ghosh2018_mnist", image_size=30)
    with pytest.raises(ModelError, match="dropout"):
        create_model("ghosh2018_mnist", dropout=1.0)
