"""Randomised smoothing (Cohen et al. 2019) on constructed models whose pA is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from robustlab.certify import Certificate, certify, predict
from robustlab.errors import InvalidParameterError, ModelError
from robustlab.seeding import make_generator

T = 0.5  # the threshold model's decision boundary on the first pixel


class Threshold(nn.Module):
    """Class 0 iff the first pixel's (noisy) value < t, else class 1.

    Under x + N(0, sigma^2), P(class 0) = Phi((t - x0) / sigma) exactly, and the L2 distance
    from x to the base classifier's decision boundary is |t - x0|.
    """

    def __init__(self, t: float = T) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, 0]
        return torch.stack([self.t - v, v - self.t], dim=1)


class Constant(nn.Module):
    def __init__(self, cls: int, classes: int = 4) -> None:
        super().__init__()
        self.cls, self.classes = cls, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.classes)
        out[:, self.cls] = 1.0
        return out


class Recorder(nn.Module):
    """Wraps a model and records the rows of each call and the mode it ran in."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []
        self.modes: list[bool] = []
        self.grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        self.modes.append(self.training)
        self.grad.append(torch.is_grad_enabled())
        out: torch.Tensor = self.inner(x)
        return out


def images(first: list[float], size: int = 2) -> torch.Tensor:
    x = torch.full((len(first), 1, size, size), 0.25)
    x[:, 0, 0, 0] = torch.tensor(first)
    return x


def expected_radius(k: int, n: int, alpha: float, sigma: float) -> float:
    p = float(stats.beta.ppf(alpha, k, n - k + 1))
    return float(sigma * stats.norm.ppf(p))


# ---------------------------------------------------------------------------------- CERTIFY


def test_threshold_model_radius_matches_scipy_and_true_distance() -> None:
    sigma, alpha, n = 0.25, 0.001, 400_000
    first = [0.1, 0.3, 0.7, 0.95]
    cert = certify(
        Threshold(),
        images(first),
        sigma=sigma,
        n0=100,
        n=n,
        alpha=alpha,
        batch_size=50_000,
        generator=make_generator(1),
    )
    assert isinstance(cert, Certificate)
    assert cert.prediction.dtype == np.int64 and cert.counts.dtype == np.int64
    assert cert.radius.dtype == np.float64 and cert.p_lower.dtype == np.float64
    assert cert.prediction.tolist() == [0, 0, 1, 1]
    for i, x0 in enumerate(first):
        k = int(cert.counts[i])
        # exact equality with an independent scipy computation from the observed count
        assert cert.p_lower[i] == stats.beta.ppf(alpha, k, n - k + 1)
        assert cert.radius[i] == expected_radius(k, n, alpha, sigma)
        # the observed frequency estimates pA = Phi(|t - x0| / sigma)
        p_true = stats.norm.cdf(abs(T - x0) / sigma)
        sd = math.sqrt(p_true * (1 - p_true) / n)
        assert abs(k / n - p_true) < 5 * sd
        # the radius approaches the true distance |t - x0| and never exceeds it by more than
        # sampling error (here the 5-sd upper band of the frequency, mapped to a radius)
        true_radius = abs(T - x0)
        slack = sigma * stats.norm.ppf(min(p_true + 5 * sd, 1 - 1e-12)) - true_radius
        assert cert.radius[i] <= true_radius + slack
        assert cert.radius[i] > true_radius - 0.02
        assert cert.radius[i] < true_radius  # pA_lower < pA here, with overwhelming probability


def test_abstains_at_the_boundary() -> None:
    cert = certify(
        Threshold(),
        images([T, T, 0.2]),
        sigma=0.25,
        n0=100,
        n=20_000,
        batch_size=10_000,
        generator=make_generator(2),
    )
    assert cert.prediction.tolist()[:2] == [-1, -1]
    assert cert.radius.tolist()[:2] == [0.0, 0.0]
    assert (cert.p_lower[:2] < 0.5).all()
    assert cert.prediction[2] == 0 and cert.radius[2] > 0


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_constant_classifier_gets_the_all_agree_bound(n: int) -> None:
    sigma, alpha = 0.5, 0.01
    cert = certify(
        Constant(2), torch.rand(3, 1, 4, 4), sigma=sigma, n0=5, n=n, alpha=alpha,
        generator=make_generator(0),
    )  # fmt: skip
    bound = alpha ** (1 / n)
    assert cert.counts.tolist() == [n] * 3
    np.testing.assert_allclose(cert.p_lower, bound, rtol=1e-12)
    if bound > 0.5:
        assert cert.prediction.tolist() == [2] * 3
        np.testing.assert_allclose(cert.radius, sigma * stats.norm.ppf(bound), rtol=1e-9)
    else:  # n = 1: one draw cannot certify anything at alpha = 0.01
        assert cert.prediction.tolist() == [-1] * 3
        assert cert.radius.tolist() == [0.0] * 3


def test_memory_flat_in_n_model_never_sees_more_than_batch_size() -> None:
    batch_size, n, n0 = 64, 640, 100
    model = Recorder(Threshold())
    model.train()
    done: list[int] = []
    x = images([0.2, 0.5, 0.9])
    certify(
        model, x, sigma=0.1, n0=n0, n=n, batch_size=batch_size, generator=make_generator(0),
        progress=done.append,
    )  # fmt: skip
    assert max(model.rows) <= batch_size
    total = len(x) * (n0 + n)
    assert sum(model.rows) == total
    assert len(model.rows) == math.ceil(len(x) * n0 / batch_size) + math.ceil(
        len(x) * n / batch_size
    )
    # eval mode and no gradient during the sampling, mode restored afterwards
    assert not any(model.modes) and not any(model.grad)
    assert model.training and model.inner.training
    # progress: after each chunk, cumulative, ending at the total
    assert len(done) == len(model.rows)
    assert done == sorted(done) and done[-1] == total


class PixelClass(nn.Module):
    """Class round(10 * first pixel): with tiny noise each image keeps its own class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x.flatten(1)[:, 0] * 10).round().long()
        return torch.nn.functional.one_hot(idx, 11).float()


def test_chunks_spread_across_images_keep_per_image_counts() -> None:
    x = images([i / 10 for i in range(11)])
    model = Recorder(PixelClass())
    cert = certify(
        model, x, sigma=1e-4, n0=3, n=7, batch_size=5, alpha=0.1, generator=make_generator(0)
    )
    assert max(model.rows) == 5
    assert cert.counts.tolist() == [7] * 11
    assert cert.prediction.tolist() == list(range(11))
    assert predict(
        PixelClass(), x, sigma=1e-4, n=40, batch_size=32, generator=make_generator(0)
    ).tolist() == list(range(11))


def test_reproducible_bit_for_bit_with_the_same_seed() -> None:
    x = images([0.45, 0.5, 0.6])

    def run(seed: int) -> Certificate:
        return certify(
            Threshold(),
            x,
            sigma=0.25,
            n0=50,
            n=5000,
            batch_size=777,
            generator=make_generator(seed),
        )

    a, b, c = run(7), run(7), run(8)
    for field in ("prediction", "radius", "p_lower", "counts"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.counts, c.counts)


def test_empty_batch() -> None:
    cert = certify(Threshold(), torch.zeros(0, 1, 2, 2), sigma=0.25, generator=make_generator(0))
    assert len(cert) == 0 and cert.prediction.dtype == np.int64
    assert np.isnan(cert.certified_accuracy(np.zeros(0, dtype=np.int64), [0.0])).all()
    assert predict(
        Threshold(), torch.zeros(0, 1, 2, 2), sigma=0.25, generator=make_generator(0)
    ).shape == (0,)


# ------------------------------------------------------------------------ certified accuracy


def test_certified_accuracy_matches_a_hand_count() -> None:
    cert = Certificate(
        prediction=np.array([0, 1, -1, 2, 1], dtype=np.int64),
        radius=np.array([0.5, 0.1, 0.0, 0.3, 0.8]),
        p_lower=np.array([0.9, 0.6, 0.4, 0.8, 0.99]),
        counts=np.array([90, 60, 40, 80, 99], dtype=np.int64),
        n0=10,
        n=100,
        alpha=0.001,
        sigma=0.25,
    )
    labels = np.array([0, 1, 0, 1, 0])  # correct: images 0 and 1; image 2 abstains (never correct)
    radii = [0.0, 0.1, 0.2, 0.5, 0.6]
    np.testing.assert_array_equal(
        cert.certified_accuracy(labels, radii), [2 / 5, 2 / 5, 1 / 5, 1 / 5, 0.0]
    )
    # an abstention whose "prediction" -1 matches a -1 label is still not correct
    assert cert.certified_accuracy(np.array([0, 1, -1, 2, 1]), 0.0).tolist() == [4 / 5]
    assert cert.certified_accuracy(torch.tensor([0, 1, 0, 1, 0]), [0.0]).tolist() == [2 / 5]
    with pytest.raises(InvalidParameterError, match="labels"):
        cert.certified_accuracy(np.array([0, 1]), [0.0])
    with pytest.raises(InvalidParameterError, match="radii"):
        cert.certified_accuracy(labels, [-0.1])


# ---------------------------------------------------------------------------------- PREDICT


def test_predict_abstains_on_a_fair_coin_and_answers_on_a_constant() -> None:
    coin = predict(
        Threshold(),
        images([T] * 4),
        sigma=0.25,
        n=1000,
        batch_size=500,
        generator=make_generator(3),
    )
    assert coin.tolist() == [-1] * 4
    const = predict(
        Constant(3), torch.rand(2, 1, 4, 4), sigma=0.25, n=1000, generator=make_generator(3)
    )
    assert const.dtype == np.int64 and const.tolist() == [3, 3]
    # a single-output model: nB = 0
    assert predict(
        Constant(0, classes=1), torch.rand(1, 1, 2, 2), sigma=0.1, n=20, generator=make_generator(0)
    ).tolist() == [0]


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -0.25}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"sigma": "0.25"}, "sigma"),
        ({"n0": 0}, "n0"),
        ({"n0": 2.5}, "n0"),
        ({"n": 0}, "n"),
        ({"n": True}, "n"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"generator": None}, "generator"),
        ({"progress": 3}, "progress"),
    ],
)
def test_bad_parameters_raise(params: dict[str, object], name: str) -> None:
    kwargs: dict[str, object] = {"sigma": 0.25, "n0": 10, "n": 10, "generator": make_generator(0)}
    kwargs.update(params)
    with pytest.raises(InvalidParameterError, match=name) as err:
        certify(Threshold(), images([0.2]), **kwargs)  # type: ignore[arg-type]
    assert (
        "e.g." in str(err.value)
        or "make_generator" in str(err.value)
        or "callable" in str(err.value)
    )


def test_bad_images_raise() -> None:
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        certify(Threshold(), images([1.5]), sigma=0.25, n=10, generator=make_generator(0))
    with pytest.raises(InvalidParameterError, match="N, C, H, W"):
        certify(Threshold(), torch.rand(1, 2, 2), sigma=0.25, n=10, generator=make_generator(0))
    with pytest.raises(InvalidParameterError, match="alpha"):
        predict(Threshold(), images([0.2]), sigma=0.25, alpha=2.0, generator=make_generator(0))


class Flat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, 0]


class NaNs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 3), float("nan"))


class ShrinkingBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x) - 1, 2)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Flat(), "shape"),
        (NaNs(), "NaN"),
        (ShrinkingBatch(), "shape"),
        (Constant(0, 4), r"\(2, 3\)"),
    ],
)
def test_bad_model_output_raises_model_error(model: nn.Module, match: str) -> None:
    num_classes = 3 if isinstance(model, Constant) else None
    with pytest.raises(ModelError, match=match):
        certify(
            model, images([0.2, 0.3]), sigma=0.25, n0=1, n=1, generator=make_generator(0),
            num_classes=num_classes,
        )  # fmt: skip
    with pytest.raises(ModelError, match=match):
        predict(
            model, images([0.2, 0.3]), sigma=0.25, n=1, generator=make_generator(0),
            num_classes=num_classes,
        )  # fmt: skip
