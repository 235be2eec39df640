"""The papers' architectures: shapes, parameter counts from the layer shapes, one training step."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import ModelError
from robustlab.models import MODELS, Normalize, create_model
from robustlab.models import stats as dataset_stats


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def fc(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def bn(channels: int) -> int:
    return 2 * channels  # gamma and beta; running statistics are buffers


def vgg16_count() -> int:
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    total, cin = 0, 3
    for w in widths:
        total += conv(cin, w, 3) + bn(w)
        cin = w
    return total + fc(512, 512) + fc(512, 512) + fc(512, 10)


def resnet_count(bottleneck: bool, depths: tuple[int, ...]) -> int:
    total, cin = conv(3, 64, 3, bias=False) + bn(64), 64
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
        for b in range(depth):
            stride = 2 if stage > 0 and b == 0 else 1
            if bottleneck:
                cout = 4 * width
                total += conv(cin, width, 1, False) + bn(width)
                total += conv(width, width, 3, False) + bn(width)
                total += conv(width, cout, 1, False) + bn(cout)
            else:
                cout = width
                total += conv(cin, width, 3, False) + bn(width) + conv(width, width, 3, False)
                total += bn(width)
            if stride != 1 or cin != cout:
                total += conv(cin, cout, 1, False) + bn(cout)
            cin = cout
    return total + fc(cin, 10)


# name, input shape (C, H, W), classes, parameter count from the documented layer shapes
CASES: list[tuple[str, tuple[int, int, int], int, int]] = [
    (
        "aghdam2016_cifar10",  # 32 -> 16 -> 8 -> 4 (3x3/2 pooling, rounding up)
        (3, 32, 32),
        10,
        conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 64) + fc(64, 10),
    ),
    (
        "aghdam2016_mnist",  # 28 -> 24 -> 12 -> 8 -> 4
        (1, 28, 28),
        10,
        conv(1, 20, 5) + conv(20, 50, 5) + fc(50 * 4 * 4, 500) + fc(500, 10),
    ),
    (
        "aghdam2016_gtsrb",  # 48 -> 42 -> 21 -> 18 -> 9 -> 6 -> 3
        (3, 48, 48),
        43,
        conv(3, 100, 7)
        + conv(100, 150, 4)
        + conv(150, 250, 4)
        + fc(250 * 3 * 3, 300)
        + fc(300, 43),
    ),
    (
        "cavey_mnist",
        (1, 28, 28),
        10,
        conv(1, 32, 3) + bn(32) + conv(32, 64, 3) + bn(64) + fc(64 * 7 * 7, 10),
    ),
    (
        "cavey_cifar10",
        (3, 32, 32),
        10,
        conv(3, 32, 3)
        + conv(32, 32, 3)
        + conv(32, 64, 3)
        + conv(64, 64, 3)
        + conv(64, 128, 3)
        + conv(128, 128, 3)
        + bn(32) * 2
        + bn(64) * 2
        + bn(128) * 2
        + fc(128 * 4 * 4, 128)
        + fc(128, 10),
    ),
    ("vgg16", (3, 32, 32), 10, vgg16_count()),
    (
        "alexnet",
        (3, 32, 32),
        10,
        conv(3, 64, 11)
        + conv(64, 192, 5)
        + conv(192, 384, 3)
        + conv(384, 256, 3)
        + conv(256, 256, 3)
        + fc(256, 512)
        + fc(512, 512)
        + fc(512, 10),
    ),
    ("resnet18", (3, 32, 32), 10, resnet_count(False, (2, 2, 2, 2))),
    ("resnet50", (3, 32, 32), 10, resnet_count(True, (3, 4, 6, 3))),
]
IDS = [c[0] for c in CASES]


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("name", "shape", "classes", "expected"), CASES, ids=IDS)
def test_shape_parameter_count_and_one_training_step(
    name: str, shape: tuple[int, int, int], classes: int, expected: int
) -> None:
    torch.manual_seed(0)
    net = create_model(name)
    assert net.eval()(torch.rand(2, *shape)).shape == (2, classes)
    assert _count(net) == expected
    # The docstring states the same count (as "1,543,443").
    assert f"{expected:,}" in (inspect.getdoc(MODELS.entry(name).factory) or "")

    net.train()
    before = [p.detach().clone() for p in net.parameters()]
    loss = F.cross_entropy(net(torch.rand(2, *shape)), torch.tensor([0, classes - 1]))
    assert torch.isfinite(loss)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True)]
    assert all(changed)  # every weight and bias received a gradient


@pytest.mark.parametrize(
    ("name", "params", "shape"),
    [
        ("aghdam2016_cifar10", {"in_channels": 1, "num_classes": 7, "image_size": 28, "mean": [0.5], "std": [0.2]}, (1, 28, 28)),
        ("aghdam2016_mnist", {"image_size": 32, "in_channels": 3}, (3, 32, 32)),
        ("aghdam2016_gtsrb", {"image_size": 32}, (3, 32, 32)),
        ("cavey_mnist", {"image_size": 32, "in_channels": 3, "mean": None, "std": None}, (3, 32, 32)),
        ("cavey_cifar10", {"image_size": 48, "num_classes": 7}, (3, 48, 48)),
        ("vgg16", {"image_size": 64, "batch_norm": False}, (3, 64, 64)),
        ("alexnet", {"image_size": 64, "in_channels": 1, "mean": [0.5], "std": [0.5]}, (1, 64, 64)),
        ("resnet18", {"in_channels": 1, "num_classes": 3, "mean": [0.1], "std": [0.3]}, (1, 28, 28)),
    ],
)  # fmt: skip
def test_other_sizes_and_channels(
    name: str, params: dict[str, object], shape: tuple[int, int, int]
) -> None:
    classes = int(str(params.get("num_classes", 43 if name == "aghdam2016_gtsrb" else 10)))
    net = create_model(name, **params).eval()
    assert net(torch.rand(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("aghdam2016_cifar10", {"image_size": 6}, "at least 8x8"),
        ("aghdam2016_gtsrb", {"image_size": 28}, "at least 32x32"),
        ("cavey_mnist", {"image_size": 30}, "divisible by 4"),
        ("cavey_cifar10", {"image_size": 28}, "divisible by 8"),
        ("vgg16", {"image_size": 48}, "divisible by 32"),
        ("alexnet", {"image_size": 28}, "divisible by 32"),
        ("cavey_cifar10", {"activation": "gelu"}, "'relu' or 'tanh'"),
        ("cavey_mnist", {"dropout": 1.0}, r"\[0, 1\)"),
        ("resnet18", {"in_channels": 1}, "3 values for 1-channel images"),
        ("vgg16", {"mean": None}, "both mean and std"),
    ],
)
def test_bad_parameters_are_explained(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        create_model(name, **params)


def test_normalisation_is_the_first_layer_with_the_documented_statistics() -> None:
    cases: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
        "aghdam2016_cifar10": (dataset_stats.CIFAR10_MEAN, dataset_stats.CIFAR10_STD),
        "aghdam2016_mnist": None,  # LeNet takes [0, 1] pixels
        "aghdam2016_gtsrb": (dataset_stats.GTSRB_MEAN, dataset_stats.GTSRB_STD),
        "cavey_mnist": (dataset_stats.MNIST_MEAN, dataset_stats.MNIST_STD),
        "cavey_cifar10": (dataset_stats.CIFAR10_MEAN, dataset_stats.CIFAR10_STD),
        "vgg16": (dataset_stats.CIFAR10_MEAN, dataset_stats.CIFAR10_STD),
        "alexnet": (dataset_stats.CIFAR10_MEAN, dataset_stats.CIFAR10_STD),
        "resnet18": (dataset_stats.CIFAR10_MEAN, dataset_stats.CIFAR10_STD),
        "resnet50": (dataset_stats.CIFAR10_MEAN, dataset_stats.CIFAR10_STD),
    }
    for name, expected in cases.items():
        first = next(iter(create_model(name).children()))
        if expected is None:
            assert isinstance(first, nn.Identity), name
            continue
        assert isinstance(first, Normalize), name
        assert first.mean.flatten().tolist() == pytest.approx(list(expected[0])), name
        assert first.std.flatten().tolist() == pytest.approx(list(expected[1])), name
    plain = create_model("resnet18", mean=None, std=None)
    assert isinstance(next(iter(plain.children())), nn.Identity)


def _receptive_field_at_first_pool(net: nn.Module) -> int:
    """Walk the layers up to the first max pooling: rf += (k - 1) * jump, jump *= stride."""
    rf, jump = 1, 1
    for layer in net.modules():
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            rf += (k - 1) * jump
            jump *= s
            if isinstance(layer, nn.MaxPool2d):
                return rf
    raise AssertionError("no max pooling")


def test_receptive_fields_straddle_the_jpeg_block() -> None:
    # ghosh2018's argument: AlexNet's R exceeds JPEG's 8x8 block, VGG-16's lies inside it.
    assert _receptive_field_at_first_pool(create_model("alexnet")) == 15
    assert _receptive_field_at_first_pool(create_model("vgg16")) == 6


def test_cavey_table_i_variants_differ_as_documented() -> None:
    full = create_model("cavey_cifar10")
    plain = create_model("cavey_cifar10", batch_norm=False, dropout=0.0, activation="tanh")
    assert _count(full) - _count(plain) == 2 * (2 * 32 + 2 * 64 + 2 * 128)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.ReLU) for m in plain.modules())
    assert sum(isinstance(m, nn.Dropout) for m in full.modules()) == 3


def test_initialisation_is_reproducible() -> None:
    def build(name: str) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            torch.manual_seed(1)
            return create_model(name)

        return make

    for name in ("aghdam2016_gtsrb", "resnet18"):
        a, b = build(name)(), build(name)()
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_mnist_statistics_match_the_data(mnist_dir: Path) -> None:
    from robustlab.data.base import Split
    from robustlab.data.datasets import load_dataset

    for name, mean, std in (
        ("mnist", dataset_stats.MNIST_MEAN, dataset_stats.MNIST_STD),
        ("fashion-mnist", dataset_stats.FASHION_MNIST_MEAN, dataset_stats.FASHION_MNIST_STD),
    ):
        train = load_dataset(name, data_dir=str(mnist_dir), download=False).train
        assert isinstance(train, Split)
        pixels = train.images.float().div_(255.0)
        # The shared MNIST train set is a 19,690-image prefix: its statistics differ slightly.
        assert pixels.mean().item() == pytest.approx(mean[0], abs=2e-3)
        assert pixels.std().item() == pytest.approx(std[0], abs=2e-3)
