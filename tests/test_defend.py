from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from robustlab.defend import create_defense, defended
from robustlab.errors import InvalidParameterError


def _images(seed: int = 0, shape: tuple[int, ...] = (3, 2, 20, 17)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [3, 5])
def test_median_matches_scipy(size: int) -> None:
    x = _images()
    ours = create_defense("median", size=size)(x).numpy()
    # torch/kornia 'reflect' is SciPy's 'mirror' (d c b | a b c d): equal everywhere.
    ref = ndi.median_filter(x.numpy(), size=(1, 1, size, size), mode="mirror")
    np.testing.assert_array_equal(ours, ref)
    # Away from the borders the padding rule does not matter: any SciPy mode agrees.
    r = size // 2
    inner = ndi.median_filter(x.numpy(), size=(1, 1, size, size), mode="constant")
    np.testing.assert_array_equal(ours[..., r:-r, r:-r], inner[..., r:-r, r:-r])


@pytest.mark.parametrize("size", [3, 5])
def test_box_matches_scipy(size: int) -> None:
    x = _images(1)
    ours = create_defense("box", size=size)(x).numpy()
    ref = ndi.uniform_filter(x.numpy().astype(np.float64), size=(1, 1, size, size), mode="mirror")
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0])
def test_gaussian_matches_scipy(sigma: float) -> None:
    x = _images(2)
    ours = create_defense("gaussian", sigma=sigma)(x).numpy()
    ref = ndi.gaussian_filter(
        x.numpy().astype(np.float64), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=4.0
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [("box", {"size": 3}), ("median", {"size": 5}), ("gaussian", {"sigma": 1.0})],
)
def test_constant_image_stays_constant(name: str, params: dict[str, float]) -> None:
    x = torch.full((2, 3, 12, 12), 0.37)
    torch.testing.assert_close(create_defense(name, **params)(x), x)


def test_median_removes_isolated_impulses() -> None:
    x = torch.full((1, 1, 9, 9), 0.5)
    x[0, 0, 4, 4] = 1.0
    x[0, 0, 0, 0] = 0.0  # a corner impulse: reflection must not smear it back in
    assert torch.equal(create_defense("median", size=3)(x), torch.full_like(x, 0.5))


def test_filters_are_differentiable() -> None:
    x = _images().requires_grad_()
    create_defense("box", size=3)(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("size", [0, 2, -3, 4])
def test_bad_size(size: int) -> None:
    with pytest.raises(InvalidParameterError, match="odd"):
        create_defense("median", size=size)


def test_too_large_for_image() -> None:
    with pytest.raises(InvalidParameterError, match="too large"):
        create_defense("box", size=9)(torch.rand(1, 1, 4, 4))


def test_gaussian_bad_sigma() -> None:
    with pytest.raises(InvalidParameterError):
        create_defense("gaussian", sigma=0)


def test_defended_applies_defense_first() -> None:
    x = torch.full((1, 1, 5, 5), 0.5)
    x[0, 0, 2, 2] = 1.0
    model = defended(torch.nn.Flatten(), create_defense("median", size=3))
    assert torch.equal(model(x), torch.full((1, 25), 0.5))


@pytest.mark.parametrize("path", ["opencv", "network"])
@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (3, 3, 32, 31), (2, 1, 2, 5)])
def test_median3_matches_scipy_with_ties(shape: tuple[int, ...], path: str) -> None:
    # Quantised values make many ties: both paths must still pick the exact median.
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 4, shape, generator=g).float() / 3
    if path == "network":  # the path taken whenever a gradient is needed
        ours = create_defense("median", size=3)(x.requires_grad_()).detach().numpy()
    else:
        ours = create_defense("median", size=3)(x).numpy()
    ref = ndi.median_filter(x.detach().numpy(), size=(1, 1, 3, 3), mode="mirror")
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("size", [3, 5])
def test_median_opencv_mosaic_matches_scipy_on_mnist_size(size: int) -> None:
    from robustlab.defend.filters import median_opencv

    x = _images(8, (6, 3, 28, 28))
    ref = ndi.median_filter(x.numpy(), size=(1, 1, size, size), mode="mirror")
    np.testing.assert_array_equal(median_opencv(x, size).numpy(), ref)


def test_median_float64_takes_the_torch_path() -> None:
    x = _images(9, (2, 1, 10, 10)).double()
    ours = create_defense("median", size=3)(x)
    assert ours.dtype == torch.float64
    ref = ndi.median_filter(x.numpy(), size=(1, 1, 3, 3), mode="mirror")
    np.testing.assert_array_equal(ours.numpy(), ref)


def test_median_passes_gradient_to_selected_pixels() -> None:
    x = _images(3, (2, 1, 8, 8)).requires_grad_()
    create_defense("median", size=3)(x).sum().backward()
    assert x.grad is not None
    # Every output pixel sends its gradient to one input pixel: the total is the pixel count.
    assert float(x.grad.sum()) == pytest.approx(2 * 64)


def test_median3_blocks_join_seamlessly(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustlab.defend import filters

    x = _images(4, (37, 2, 9, 11))
    whole = filters.median3x3(x)
    monkeypatch.setattr(filters, "_MEDIAN_BLOCK", 2 * 9 * 11 * 5)  # blocks of 5 images
    assert torch.equal(filters.median3x3(x), whole)
