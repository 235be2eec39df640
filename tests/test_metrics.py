from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support
from torchmetrics.functional.image import peak_signal_noise_ratio

from robustlab.metrics import (
    corruption_error,
    error_reduction,
    precision_recall,
    psnr,
    relative_corruption_error,
    relative_improvement,
    ssim,
)


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=g)
    noisy = (clean + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    return noisy, clean


def test_psnr_matches_torchmetrics_and_skimage() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    noisy, clean = _pair((4, 3, 20, 17))
    ours = psnr(noisy, clean)
    theirs = peak_signal_noise_ratio(noisy, clean, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for i in range(4):
        ref = metrics.peak_signal_noise_ratio(
            clean[i].double().numpy(), noisy[i].double().numpy(), data_range=1.0
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-3)
    assert torch.isinf(psnr(clean, clean)).all()


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 32, 32), (2, 1, 11, 15)])
def test_ssim_matches_skimage(shape: tuple[int, ...]) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    noisy, clean = _pair(shape, seed=1)
    ours = ssim(noisy, clean)
    for i in range(shape[0]):
        ref = metrics.structural_similarity(
            clean[i].double().numpy(), noisy[i].double().numpy(), data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0,
        )  # fmt: skip
        assert float(ours[i]) == pytest.approx(ref, abs=1e-5)
    torch.testing.assert_close(ssim(clean, clean), torch.ones(shape[0]))


def test_ssim_on_images_smaller_than_the_window() -> None:
    noisy, clean = _pair((2, 1, 6, 6))
    values = ssim(noisy, clean)
    assert values.shape == (2,) and torch.all(values < 1) and torch.all(values > -1)


def test_precision_recall_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 500)
    p = np.where(rng.random(500) < 0.7, y, rng.integers(0, 5, 500))
    confusion = np.zeros((5, 5), dtype=np.int64)
    np.add.at(confusion, (y, p), 1)
    precision, recall = precision_recall(confusion)
    ref_p, ref_r, _, _ = precision_recall_fscore_support(y, p, labels=range(5), zero_division=0)
    np.testing.assert_allclose(precision, ref_p)
    np.testing.assert_allclose(recall, ref_r)


def test_paper_formulas() -> None:
    # lin2022: the median filter takes salt-and-pepper errors from 2,607 to 705.
    assert error_reduction(2607, 705) == pytest.approx(72.96, abs=0.01)
    assert error_reduction(0, 5) is None
    # ghosh2018 Table 1, MS row: (66.7 - 61.2) / (70.2 - 61.2) = 61.1% (printed 60.5 from unrounded values)
    assert relative_improvement(70.2, 61.2, 66.7) == pytest.approx(0.611, abs=0.001)
    assert relative_improvement(0.9, 0.9, 0.95) is None
    # Hendrycks & Dietterich: CE is a ratio of summed errors; relative CE of the error increases.
    assert corruption_error([0.2, 0.4], [0.4, 0.4]) == pytest.approx(0.75)
    assert relative_corruption_error([0.2, 0.4], 0.1, [0.4, 0.4], 0.2) == pytest.approx(1.0)
