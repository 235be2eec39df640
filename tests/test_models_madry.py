"""Madry et al.'s (2018) MNIST network: layer shapes, parameter count, initialisation, training."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.models import MODELS, MadryMNIST, Normalize, create_model


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _fc(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


# mnist_challenge/model.py: W_conv1 [5,5,1,32], W_conv2 [5,5,32,64], W_fc1 [7*7*64, 1024],
# W_fc2 [1024, 10], one bias per output: 832 + 51,264 + 3,212,288 + 10,250.
MADRY_COUNT = _conv(1, 32, 5) + _conv(32, 64, 5) + _fc(7 * 7 * 64, 1024) + _fc(1024, 10)


def test_parameter_count_from_the_layer_shapes() -> None:
    assert MADRY_COUNT == 3_274_634
    net = create_model("madry_mnist")
    assert sum(p.numel() for p in net.parameters()) == MADRY_COUNT
    assert "3,274,634" in (inspect.getdoc(MODELS.entry("madry_mnist").factory) or "")
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (1024, 3136), (1024,), (10, 1024), (10,)]  # fmt: skip


def test_same_padding_keeps_28_14_7_and_pixels_are_not_normalised() -> None:
    net = create_model("madry_mnist").eval()
    assert isinstance(net, MadryMNIST)
    assert not any(isinstance(m, Normalize | nn.BatchNorm2d | nn.Dropout) for m in net.modules())
    features = net.features(torch.rand(3, 1, 28, 28))
    assert features.shape == (3, 64, 7, 7)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    bigger = create_model("madry_mnist", in_channels=3, num_classes=4, image_size=32)
    assert bigger(torch.rand(2, 3, 32, 32)).shape == (2, 4)


def test_madry_initialisation_is_their_truncated_normal_and_constant_bias() -> None:
    torch.manual_seed(0)
    net = create_model("madry_mnist", init="madry")
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in net.named_parameters() if name.endswith("bias")]
    every = torch.cat([w.detach().flatten() for w in weights])
    # tf.truncated_normal(stddev=0.1): N(0, 0.1) cut at +-2 std, whose std is 0.1 * 0.8796.
    assert float(every.abs().max()) <= 0.2
    assert float(every.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(every.std()) == pytest.approx(0.08796, rel=0.01)
    assert all(bool((b == 0.1).all()) for b in biases)
    torch.manual_seed(0)
    default = create_model("madry_mnist")
    assert isinstance(default, MadryMNIST)
    first = default.features[0]
    assert isinstance(first, nn.Conv2d) and first.bias is not None
    bound = 1 / (1 * 5 * 5) ** 0.5  # PyTorch's Kaiming-uniform bound for a 5x5x1 convolution
    assert float(first.weight.detach().abs().max()) <= bound
    assert float(first.bias.detach().abs().max()) <= bound
    assert not bool((first.bias == 0.1).all())


@pytest.mark.parametrize("init", ["madry", "pytorch"])
def test_one_training_step_moves_every_parameter(init: str) -> None:
    torch.manual_seed(0)
    net = create_model("madry_mnist", init=init).train()
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 7, 9])
    loss = F.cross_entropy(net(x), y)
    assert torch.isfinite(loss)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    with torch.no_grad():
        assert float(F.cross_entropy(net(x), y)) < float(loss.detach())


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"image_size": 30}, "divisible by 4"),
        ({"image_size": 0}, "whole number >= 1"),
        ({"init": "xavier"}, "init must be 'madry'"),
    ],
)
def test_bad_parameters_are_explained(params: dict[str, object], match: str) -> None:
    with pytest.raises(RobustlabError, match=match):
        create_model("madry_mnist", **params)
