"""``transfer`` (cavey VI-C): a new fully connected head on a parent, whole or head-only tuning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.errors import InvalidParameterError, ModelError
from robustlab.models import create_model
from robustlab.train.strategies.transfer import Transfer
from robustlab.train.strategy import StepContext

NOISE = {"degradation": "gaussian_noise_variance", "levels": [0.05]}


def _linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def test_mnist_head_is_256_relu_then_the_old_output_width() -> None:
    net = Transfer(hidden=[256]).adapt(create_model("cavey_mnist"))
    assert _linear_shapes(net) == [(3136, 256), (256, 10)]
    head = net.classifier[-1]
    assert isinstance(head, nn.Sequential) and isinstance(head[1], nn.ReLU)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_cifar_head_is_256_then_512_before_the_output_layer() -> None:
    parent = create_model("cavey_cifar10")
    before = _linear_shapes(parent)
    net = Transfer(hidden=[256, 512]).adapt(parent)
    # The last Linear of the parent is replaced; every earlier one is kept.
    assert _linear_shapes(net) == [*before[:-1], (before[-1][0], 256), (256, 512), (512, 10)]


def test_head_only_trains_only_the_new_layers_and_keeps_batch_norm_frozen() -> None:
    strategy = Transfer(hidden=[256], train="head", perturbation=NOISE)
    net = strategy.adapt(create_model("cavey_mnist"))
    trainable = {id(p) for p in strategy.trainable(net)}
    head = {id(p) for p in net.classifier[-1].parameters()}
    assert trainable == head
    assert sum(p.numel() for p in strategy.trainable(net)) == 3136 * 256 + 256 + 256 * 10 + 10

    strategy.train_mode(net)
    batch_norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    assert net.classifier[-1].training
    stats = [m.running_mean.clone() for m in batch_norms]
    frozen = [p.detach().clone() for p in net.features.parameters()]
    optimizer = torch.optim.SGD(strategy.trainable(net), lr=0.1)
    context = StepContext(0, 1, torch.Generator().manual_seed(0), num_classes=10)
    loss = strategy.loss(net, torch.rand(8, 1, 28, 28), torch.arange(8), context)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, batch_norms, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen, net.features.parameters(), strict=True))


def test_whole_network_tuning_trains_every_parameter_in_training_mode() -> None:
    strategy = Transfer(train="all")
    net = strategy.adapt(create_model("cavey_mnist"))
    assert len(strategy.trainable(net)) == len(list(net.parameters()))
    strategy.train_mode(net)
    assert all(m.training for m in net.modules())


def test_share_perturbs_that_fraction_of_the_batch() -> None:
    captured: list[torch.Tensor] = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    net.register_forward_pre_hook(lambda _m, args: captured.append(args[0].clone()))
    x = torch.full((400, 1, 4, 4), 0.5)
    context = StepContext(0, 1, torch.Generator().manual_seed(0), num_classes=10)
    Transfer(perturbation=NOISE, share=0.25).loss(net, x, torch.arange(400) % 10, context)
    changed = (captured[0] != x).flatten(1).any(1).float().mean().item()
    assert 0.18 < changed < 0.32


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden": [0]}, "hidden widths must be >= 1"),
        ({"train": "some"}, "train must be 'all' or 'head'"),
        ({"share": 1.5}, r"share must be in \[0, 1\]"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        Transfer(**params)  # type: ignore[arg-type]


def test_a_model_without_a_linear_layer_is_refused() -> None:
    with pytest.raises(ModelError, match=r"no nn\.Linear layer"):
        Transfer().adapt(nn.Sequential(nn.Conv2d(1, 1, 3)))
