from __future__ import annotations

import pytest
import torch

from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import InvalidParameterError

NAMES = ["dead_pixels", "hot_pixels", "stuck_pixels"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _interior(shape: tuple[int, ...], seed: int = 9) -> torch.Tensor:
    """Images with no value equal to 0 or 1 (nor to any value a stuck pixel is likely to get)."""
    return torch.rand(shape, generator=_gen(seed)) * 0.5 + 0.25


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("count", [0, 1, 5, 28 * 28])
def test_exactly_count_pixels_change_per_image(name: str, count: int) -> None:
    x = _interior((16, 3, 28, 28))
    y = create_degradation(name, count=count)(x, _gen())
    changed = (y != x).any(dim=1)  # (N, H, W): pixel positions that changed
    assert changed.sum(dim=(1, 2)).tolist() == [count] * 16
    unchanged = ~changed.unsqueeze(1).expand_as(x)
    assert torch.equal(y[unchanged], x[unchanged])


@pytest.mark.parametrize(("name", "value"), [("dead_pixels", 0.0), ("hot_pixels", 1.0)])
def test_dead_and_hot_set_every_channel(name: str, value: float) -> None:
    x = _interior((8, 3, 10, 12))
    y = create_degradation(name, count=7)(x, _gen())
    hit = (y == value).all(dim=1)
    assert hit.sum(dim=(1, 2)).tolist() == [7] * 8
    assert bool(((y == value).any(dim=1) == hit).all()), "a pixel changed on some channels only"


def test_stuck_pixels_are_independent_uniform_per_channel() -> None:
    x = torch.ones(400, 3, 8, 8)  # stuck values are drawn from [0, 1): every one differs
    y = create_degradation("stuck_pixels", count=5)(x, _gen())
    stuck = (y != 1.0).all(dim=1)
    assert stuck.sum(dim=(1, 2)).tolist() == [5] * 400
    assert bool(((y != 1.0).any(dim=1) == stuck).all())
    values = y.permute(0, 2, 3, 1)[stuck]  # (2000, 3)
    assert float(values.min()) >= 0.0 and float(values.max()) < 1.0
    assert float(values.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(values.var()) == pytest.approx(1 / 12, abs=0.005)
    correlation = torch.corrcoef(values.T)
    assert float((correlation - torch.eye(3)).abs().max()) < 0.08, "channels are not independent"


def test_positions_are_uniform_and_differ_between_images() -> None:
    n, h, w, count = 3000, 4, 5, 3
    y = create_degradation("hot_pixels", count=count)(torch.zeros(n, 1, h, w), _gen())
    hits = y[:, 0].reshape(n, h * w)
    frequency = hits.mean(dim=0)  # each position is hit with probability count / (h * w)
    expected = count / (h * w)
    assert float((frequency - expected).abs().max()) < 4 * (expected * (1 - expected) / n) ** 0.5
    assert len({tuple(row.nonzero().flatten().tolist()) for row in hits[:50]}) > 40


@pytest.mark.parametrize("name", NAMES)
def test_determinism_shape_dtype(name: str) -> None:
    degradation = create_degradation(name, count=3)
    assert degradation.random
    assert DEGRADATIONS.entry(name).severity == "count"
    x = _interior((4, 1, 9, 7))
    copy = x.clone()
    y = degradation(x, _gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y, degradation(x, _gen(1)))
    assert not torch.equal(y, degradation(x, _gen(2)))
    assert torch.equal(x, copy), "input was modified"


def test_non_contiguous_input() -> None:
    x = _interior((4, 12, 12, 3)).permute(0, 3, 1, 2)
    y = create_degradation("dead_pixels", count=4)(x, _gen())
    assert (y == 0).all(dim=1).sum(dim=(1, 2)).tolist() == [4] * 4


@pytest.mark.parametrize("name", NAMES)
def test_count_larger_than_the_image(name: str) -> None:
    degradation = create_degradation(name, count=26)
    with pytest.raises(
        InvalidParameterError,
        match=r"count must be in \[0, H\*W\] = \[0, 25\] for 5x5 images, got 26",
    ):
        degradation(torch.rand(2, 1, 5, 5), _gen())


@pytest.mark.parametrize("count", [-1, 1.5, True, "3", None])
def test_bad_count(count: object) -> None:
    with pytest.raises(InvalidParameterError, match="count must be an integer >= 0"):
        create_degradation("dead_pixels", count=count)
