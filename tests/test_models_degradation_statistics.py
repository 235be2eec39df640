"""``degradation_statistics``: the statistics against numpy / scipy, and a trained detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from robustlab.data import load_dataset
from robustlab.degrade import create_degradation
from robustlab.models import create_model
from robustlab.models.degradation_statistics import STATISTICS, image_statistics
from robustlab.train.bins import DegradationBins
from robustlab.train.cache import ModelCache
from robustlab.train.loop import TrainingRecipe

KINDS = [
    {"name": "clean"},
    {"name": "impulse", "degradations": [{"degradation": "salt_pepper", "levels": [0.1, 0.3]}]},
    {"name": "gaussian", "degradations": [{"degradation": "gaussian_noise", "levels": [0.2, 0.4]}]},
    {"name": "jpeg", "degradations": [{"degradation": "jpeg", "levels": [10, 20]}]},
]


def _reference(image: np.ndarray) -> list[float]:
    """The eight statistics of one ``(H, W)`` image, written out with numpy and scipy."""
    median = ndimage.median_filter(image, size=3, mode="mirror")  # reflected borders
    local = ndimage.uniform_filter(image.astype(np.float64), size=3, mode="nearest")
    residual = np.abs(image - local)
    out = [
        float(np.mean(np.abs(image - median) > 0.5)),
        float(np.mean(image == 0)),
        float(np.mean(image == 1)),
        float(np.mean((image > 0.05) & (image < 0.95))),
        float(residual.mean()),
        # torch's median of an even count is the lower middle value
        float(np.sort(residual.ravel())[(residual.size - 1) // 2]),
    ]
    for axis in (0, 1):
        step = np.abs(np.diff(image.astype(np.float64), axis=axis))
        border = np.zeros(step.shape[axis], dtype=bool)
        border[7::8] = True
        across = np.compress(border, step, axis=axis).mean()
        inside = np.compress(~border, step, axis=axis).mean()
        out.append(float(across / (inside + 1e-6)))
    return out


def test_the_statistics_match_a_numpy_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 20, 24, generator=generator)
    x[0, 0, 4, 4], x[0, 0, 10, 10] = 1.0, 0.0  # exact extremes
    x[1] = (x[1] > 0.5).float()  # binary
    x[2, 0, :, :8] = 0.3  # a flat strip
    got = image_statistics(x)
    assert got.shape == (3, STATISTICS) and got.dtype == torch.float32
    for i in range(3):
        want = _reference(x[i, 0].numpy())
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-4, atol=1e-6)


def test_each_statistic_reacts_to_its_degradation() -> None:
    x, _ = next(load_dataset("mnist-sample").test.batches(200))
    generator = torch.Generator().manual_seed(1)
    clean = image_statistics(x).mean(dim=0)
    impulse = image_statistics(create_degradation("salt_pepper", amount=0.1)(x, generator))
    noisy = image_statistics(create_degradation("gaussian_noise", sigma=0.3)(x, generator))
    jpeg = image_statistics(create_degradation("jpeg", quality=10)(x, generator))
    assert impulse.mean(dim=0)[0] > 10 * clean[0]  # impulses stand out from their median
    assert noisy.mean(dim=0)[3] > 2 * clean[3]  # noise fills the background with grey
    assert noisy.mean(dim=0)[5] > 10 * clean[5]  # and raises the median residual
    # JPEG's 8x8 blocks: steps across block borders outgrow the steps inside (rows and columns)
    assert (jpeg.mean(dim=0)[6:] > clean[6:] + 0.3).all()


def test_images_without_a_block_border_have_blockiness_one() -> None:
    statistics = image_statistics(torch.rand(2, 3, 6, 6))
    assert torch.equal(statistics[:, 6:], torch.ones(2, 2))


def test_a_color_image_is_read_through_its_channel_mean() -> None:
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(image_statistics(x), image_statistics(x.mean(dim=1, keepdim=True)))


@pytest.mark.slow
def test_trained_by_the_quality_strategy_it_tells_the_kinds_apart(tmp_path: Path) -> None:
    dataset = load_dataset("mnist-sample")
    recipe = TrainingRecipe(
        architecture="degradation_statistics", dataset="mnist-sample", strategy="quality",
        strategy_params={"bins": KINDS}, kind="quality", epochs=4, batch_size=100,
        learning_rate=1e-2, optimizer="adam",
    )  # fmt: skip
    served = ModelCache(tmp_path).get_or_train(recipe, dataset)
    detector = served.model.eval()
    assert served.card.clean_accuracy is not None and served.card.clean_accuracy > 0.95
    # Independent of the strategy's own score: every kind of held-out test digit, fresh draws.
    x, _ = next(dataset.test.batches(500))
    bins = DegradationBins.from_spec(KINDS)
    for k, item in enumerate(bins.bins):
        images = item.apply(x, torch.Generator().manual_seed(10 + k))
        with torch.no_grad():
            accuracy = float((detector(images).argmax(dim=1) == k).float().mean())
        assert accuracy > 0.93, f"{item.name}: {accuracy:.3f}"
    assert create_model("degradation_statistics", num_classes=3)(x[:2]).shape == (2, 3)
