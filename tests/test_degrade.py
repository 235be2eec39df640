from __future__ import annotations

import pytest
import torch

from robustlab.degrade import create_degradation
from robustlab.errors import InvalidParameterError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("name", "params"), [("gaussian_noise", {"sigma": 0.2}), ("salt_pepper", {"amount": 0.2})]
)
def test_shape_range_dtype_and_determinism(name: str, params: dict[str, float]) -> None:
    x = torch.rand(4, 3, 16, 12, generator=_gen(9))
    degradation = create_degradation(name, **params)
    y = degradation(x, _gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y, degradation(x, _gen(1)))
    assert not torch.equal(y, degradation(x, _gen(2)))
    assert torch.equal(x, torch.rand(4, 3, 16, 12, generator=_gen(9))), "input was modified"


def test_gaussian_noise_statistics() -> None:
    # Mid-grey input: clipping at 0 and 1 is 2.5 sigmas away, so the noise is nearly unclipped.
    sigma = 0.1
    x = torch.full((64, 1, 32, 32), 0.5)
    noise = create_degradation("gaussian_noise", sigma=sigma)(x, _gen()) - x
    assert abs(float(noise.mean())) < 0.002
    assert float(noise.std()) == pytest.approx(sigma, rel=0.01)
    # Independence across pixels: neighbouring noise values are uncorrelated.
    flat = noise.flatten()
    assert abs(float(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1])) < 0.01


def test_gaussian_noise_clips() -> None:
    x = torch.ones(8, 1, 16, 16)
    y = create_degradation("gaussian_noise", sigma=0.5)(x, _gen())
    assert float(y.max()) == 1.0
    assert float((y == 1.0).float().mean()) == pytest.approx(0.5, abs=0.05)


def test_gaussian_zero_sigma_is_identity() -> None:
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(create_degradation("gaussian_noise", sigma=0.0)(x, _gen()), x)


def test_salt_pepper_fraction_and_balance() -> None:
    amount = 0.3
    x = torch.full((32, 3, 32, 32), 0.5)
    y = create_degradation("salt_pepper", amount=amount)(x, _gen())
    pepper = (y == 0).all(dim=1)
    salt = (y == 1).all(dim=1)
    untouched = (y == 0.5).all(dim=1)
    # Every pixel is exactly one of the three, on all channels at once.
    assert bool((pepper.int() + salt.int() + untouched.int() == 1).all())
    pixels = pepper.numel()
    assert float(pepper.sum() + salt.sum()) / pixels == pytest.approx(amount, abs=0.01)
    assert float(salt.sum()) / float(pepper.sum()) == pytest.approx(1.0, abs=0.05)


def test_salt_pepper_extremes() -> None:
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(create_degradation("salt_pepper", amount=0.0)(x, _gen()), x)
    y = create_degradation("salt_pepper", amount=1.0)(x, _gen())
    assert bool(((y == 0) | (y == 1)).all())


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gaussian_noise", {"sigma": -0.1}),
        ("gaussian_noise", {"sigma": float("nan")}),
        ("salt_pepper", {"amount": 1.5}),
        ("salt_pepper", {"amount": -0.01}),
    ],
)
def test_bad_parameters(name: str, params: dict[str, float]) -> None:
    with pytest.raises(InvalidParameterError):
        create_degradation(name, **params)


def test_identity() -> None:
    x = torch.rand(2, 1, 8, 8)
    assert create_degradation("none")(x, _gen()) is x


def test_unclipped_gaussian_noise_is_the_clipped_draw_before_clipping() -> None:
    x = torch.rand(4, 1, 8, 8, generator=_gen())
    unclipped = create_degradation("gaussian_noise", sigma=0.3, clip=False)(x, _gen())
    clipped = create_degradation("gaussian_noise", sigma=0.3)(x, _gen())
    expected = x + 0.3 * torch.randn(x.shape, generator=_gen())
    assert torch.allclose(unclipped, expected)
    assert torch.equal(clipped, unclipped.clamp(0.0, 1.0))
    assert unclipped.min() < 0.0 and unclipped.max() > 1.0


def test_gaussian_noise_clip_must_be_a_boolean() -> None:
    with pytest.raises(InvalidParameterError, match="clip must be true or false"):
        create_degradation("gaussian_noise", sigma=0.1, clip="no")
