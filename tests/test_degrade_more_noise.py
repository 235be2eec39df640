from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import InvalidParameterError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("name", "params"),
    [("gaussian_noise_variance", {"variance": 0.01}), ("gaussian_noise_255", {"sigma": 20})],
)
def test_shape_range_dtype_and_determinism(name: str, params: dict[str, float]) -> None:
    x = torch.rand(4, 3, 16, 12, generator=_gen(9))
    degradation = create_degradation(name, **params)
    y = degradation(x, _gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y, degradation(x, _gen(1)))
    assert not torch.equal(y, degradation(x, _gen(2)))
    assert torch.equal(x, torch.rand(4, 3, 16, 12, generator=_gen(9))), "input was modified"
    assert degradation.random


def test_registered_severities() -> None:
    assert DEGRADATIONS.entry("gaussian_noise_variance").severity == "variance"
    assert DEGRADATIONS.entry("gaussian_noise_255").severity == "sigma"


@pytest.mark.parametrize("variance", [0.001, 0.01, 0.02])
def test_variance_parametrisation_std(variance: float) -> None:
    # Mid-grey: clipping is >= 3.5 standard deviations away, so the noise is (almost) unclipped.
    x = torch.full((64, 1, 32, 32), 0.5)
    noise = create_degradation("gaussian_noise_variance", variance=variance)(x, _gen()) - x
    assert float(noise.std()) == pytest.approx(math.sqrt(variance), rel=0.01)
    assert abs(float(noise.mean())) < 0.002


def test_variance_parametrisation_matches_scikit_image() -> None:
    # Same distribution as skimage's random_noise(mode="gaussian", var=..., clip=True), which is
    # what cavey's "variance" means; 0.05 is cavey's strongest level, where clipping matters.
    util = pytest.importorskip("skimage.util")
    variance = 0.05
    image = np.full((64, 1, 32, 32), 0.8)
    theirs = util.random_noise(image, mode="gaussian", mean=0.0, var=variance, clip=True, rng=0)
    ours = create_degradation("gaussian_noise_variance", variance=variance)(
        torch.from_numpy(image).float(), _gen()
    )
    ours = ours.double().numpy()
    assert float(np.std(theirs - image)) == pytest.approx(math.sqrt(variance), rel=0.5)
    for statistic in (np.mean, np.std):
        assert statistic(ours) == pytest.approx(statistic(theirs), abs=0.003)
    assert float(np.mean(ours == 1.0)) == pytest.approx(float(np.mean(theirs == 1.0)), abs=0.005)
    assert float(np.mean(ours == 1.0)) == pytest.approx(0.186, abs=0.005)  # P(N > 0.2/0.2236)


@pytest.mark.parametrize("sigma", [1, 8, 25])
def test_sigma_255_scale_and_psnr(sigma: float) -> None:
    x = torch.full((64, 1, 32, 32), 0.5)
    noise = create_degradation("gaussian_noise_255", sigma=sigma)(x, _gen()) - x
    assert float(noise.std()) == pytest.approx(sigma / 255, rel=0.01)
    # aghdam2016's PSNR statements: sigma 1 ~ 48 dB, 8 ~ 30 dB, 40 ~ 16 dB (peak 255).
    psnr = 10 * math.log10(1.0 / float(noise.pow(2).mean()))
    assert psnr == pytest.approx(20 * math.log10(255 / sigma), abs=0.1)


def test_the_three_parametrisations_agree() -> None:
    x = torch.rand(2, 3, 8, 8, generator=_gen(3))
    a = create_degradation("gaussian_noise", sigma=0.1)(x, _gen(5))
    b = create_degradation("gaussian_noise_variance", variance=0.01)(x, _gen(5))
    c = create_degradation("gaussian_noise_255", sigma=25.5)(x, _gen(5))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_clipping() -> None:
    x = torch.ones(8, 1, 16, 16)
    y = create_degradation("gaussian_noise_255", sigma=100)(x, _gen())
    assert float(y.max()) == 1.0 and float(y.min()) >= 0.0
    assert float((y == 1.0).float().mean()) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    ("name", "param"), [("gaussian_noise_variance", "variance"), ("gaussian_noise_255", "sigma")]
)
def test_zero_is_identity(name: str, param: str) -> None:
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(create_degradation(name, **{param: 0.0})(x, _gen()), x)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gaussian_noise_variance", {"variance": -0.01}),
        ("gaussian_noise_variance", {"variance": float("nan")}),
        ("gaussian_noise_255", {"sigma": -1}),
        ("gaussian_noise_255", {"sigma": float("nan")}),
    ],
)
def test_bad_parameters(name: str, params: dict[str, float]) -> None:
    ((param, value),) = params.items()
    with pytest.raises(InvalidParameterError, match=rf"{param} must be >= 0, got {value}"):
        create_degradation(name, **params)
