from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from robustlab import separable
from robustlab.degrade import DEGRADATIONS, GaussianBlur, create_degradation
from robustlab.errors import InvalidParameterError


def _scipy_blur(x: torch.Tensor, sigma: float, radius: int, mode: str = "mirror") -> np.ndarray:
    """The reference: SciPy on each image and channel (no smoothing across N and C)."""
    a = x.double().numpy()
    return ndimage.gaussian_filter(
        a, (0, 0, sigma, sigma), mode=mode, radius=(0, 0, radius, radius)
    )


@pytest.mark.parametrize(
    ("shape", "sigma", "radius"),
    [
        ((3, 1, 28, 28), 1.0, None),
        ((2, 3, 32, 32), 0.7, None),
        ((2, 3, 30, 17), 2.5, None),  # odd, non-square
        ((2, 1, 28, 28), 1.0, 4),  # ghosh2018's radius 4, sigma 1
        ((2, 1, 6, 7), 3.0, 20),  # radius far beyond the image: mirrored again and again
        ((2, 2, 1, 9), 1.5, None),  # a single row
        ((1, 1, 1, 1), 2.0, None),
    ],
)
def test_equals_scipy_mirror_everywhere(
    shape: tuple[int, ...], sigma: float, radius: int | None
) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    degradation = GaussianBlur(sigma=sigma, radius=radius)
    expected_radius = int(4 * sigma + 0.5) if radius is None else radius
    assert degradation.radius == expected_radius
    expected = _scipy_blur(x, sigma, expected_radius)
    np.testing.assert_allclose(
        degradation(x, torch.Generator()).numpy(), expected, atol=2e-6, rtol=0
    )
    # In float64 the two agree to rounding.
    np.testing.assert_allclose(
        degradation(x.double(), torch.Generator()).numpy(), expected, atol=1e-12, rtol=0
    )


def test_default_radius_is_scipys_truncate_4_away_from_borders() -> None:
    # SciPy's defaults (truncate=4, mode="reflect") differ from ours only near the borders.
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    sigma = 1.6
    r = int(4 * sigma + 0.5)
    ours = GaussianBlur(sigma=sigma)(x, torch.Generator()).numpy()
    theirs = ndimage.gaussian_filter(x.double().numpy(), (0, 0, sigma, sigma))
    np.testing.assert_allclose(ours[..., r:-r, r:-r], theirs[..., r:-r, r:-r], atol=2e-6, rtol=0)
    assert not np.allclose(ours, theirs, atol=1e-4), "the border modes should differ"


def test_ghosh_kernel_is_9x9() -> None:
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1.0
    y = GaussianBlur(sigma=1.0, radius=4)(x, torch.Generator())[0, 0]
    support = (y > 0).nonzero()
    assert support.min().item() == 6 and support.max().item() == 14
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(y, y.T)


def test_convolution_path_equals_matrix_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.rand(2, 3, 19, 23, generator=torch.Generator().manual_seed(2))
    degradation = GaussianBlur(sigma=2.0)
    by_matrix = degradation(x, torch.Generator())
    monkeypatch.setattr(separable, "MATMUL_MAX_SIDE", 0)
    by_convolution = degradation(x, torch.Generator())
    torch.testing.assert_close(by_convolution, by_matrix, atol=1e-6, rtol=0)
    np.testing.assert_allclose(by_convolution.numpy(), _scipy_blur(x, 2.0, 8), atol=2e-6, rtol=0)


@pytest.mark.parametrize("side", [8, 2000])  # both code paths
def test_device_agnostic_on_meta_tensors(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    # Every tensor the blur builds must follow x to its device.
    x = torch.empty(2, 3, side, 8, device="meta")
    y = GaussianBlur(sigma=1.0)(x, torch.Generator())
    assert y.device.type == "meta" and y.shape == x.shape and y.dtype == x.dtype


def test_deterministic_shape_range_dtype() -> None:
    degradation = create_degradation("gaussian_blur", sigma=1.0)
    assert not degradation.random and type(degradation).random is False
    assert DEGRADATIONS.entry("gaussian_blur").severity == "sigma"
    x = torch.rand(3, 3, 16, 12, generator=torch.Generator().manual_seed(3))
    copy = x.clone()
    y = degradation(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, degradation(x, torch.Generator().manual_seed(2)))
    assert torch.equal(x, copy), "input was modified"
    ones = degradation(torch.ones(1, 3, 9, 9), torch.Generator())
    assert float(ones.max()) <= 1.0 and float(ones.min()) == pytest.approx(1.0, abs=1e-6)


def test_radius_zero_is_identity() -> None:
    x = torch.rand(2, 1, 8, 8)
    y = GaussianBlur(sigma=5.0, radius=0)(x, torch.Generator())
    assert torch.equal(y, x) and y is not x
    assert GaussianBlur(sigma=0.04).radius == 0  # cavey's smallest alternative level


def test_differentiable() -> None:
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    degradation = GaussianBlur(sigma=0.8)
    assert torch.autograd.gradcheck(lambda t: degradation(t, torch.Generator()), (x,))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sigma": 0.0}, "sigma must be a finite number > 0 pixels, got 0.0"),
        ({"sigma": -1.0}, "sigma must be a finite number > 0 pixels, got -1.0"),
        ({"sigma": float("nan")}, "sigma must be a finite number > 0"),
        ({"sigma": float("inf")}, "sigma must be a finite number > 0"),
        ({"sigma": 1.0, "radius": -1}, "radius must be an integer >= 0"),
        ({"sigma": 1.0, "radius": 1.5}, "radius must be an integer >= 0"),
        ({"sigma": 1.0, "radius": True}, "radius must be an integer >= 0"),
    ],
)
def test_bad_parameters(params: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message.replace("(", r"\(")):
        create_degradation("gaussian_blur", **params)
