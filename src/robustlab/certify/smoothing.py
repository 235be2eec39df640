"""Randomised smoothing: certified L2 robustness by Monte-Carlo sampling of Gaussian noise.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML
2019 (Algorithm "CERTIFY" and "PREDICT", Theorem 1). A base classifier ``f`` (any model mapping
images to logits) defines the *smoothed* classifier

    ``g(x) = argmax_c P(f(x + eps) = c)``,  ``eps ~ N(0, sigma^2 I)``.

**Guarantee.** When :func:`certify` returns class ``cA`` with radius ``R > 0`` for ``x``, then,
with probability at least ``1 - alpha`` over its Monte-Carlo sampling, ``g(x + delta) = cA``
for every perturbation with ``||delta||_2 < R``: the smoothed classifier is constant within the
L2 ball of that radius. ``R = sigma * Phi^{-1}(pA_lower)``, where ``pA_lower`` is a one-sided
``(1 - alpha)`` Clopper-Pearson lower bound on ``P(f(x + eps) = cA)``. The guarantee is about
``g``, not about the base classifier ``f``: ``f`` itself may change within the ball.

**Noise.** The noise is added *unclipped*, as in Cohen et al.'s analysis and code: ``x + eps``
leaves ``[0, 1]``. Clipping would change the noise distribution and void the theorem; the base
model sees out-of-range pixels and must have been trained to (Gaussian data augmentation at the
same ``sigma`` is the usual recipe, and such Gaussian-noise-trained models are exactly what
smoothing certifies well).

**Any base classifier.** The theorem holds for every ``f``: a plain classifier, a model trained
on Gaussian noise, or a ``denoiser -> classifier`` pipeline (denoised smoothing, Salman et al.,
"Denoised Smoothing: A Provable Defense for Pretrained Classifiers", NeurIPS 2020), which is
certified by passing ``nn.Sequential(denoiser, classifier)`` as the model.

**Cost.** The Monte-Carlo sampling runs in chunks of ``batch_size`` noisy images, each chunk
holding copies of one or several images of the batch, so memory stays flat in ``n``; only
per-image class counts ``(N, classes)`` are kept. The model runs in eval mode under
``torch.no_grad`` (its former mode is restored afterwards). Every draw comes from the given
``torch.Generator``: the same seed, batch and ``batch_size`` give the same result bit for bit.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.seeding import make_generator
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # class 1 iff first pixel > 0.5
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([0.5, -0.5]))
    >>> x = torch.tensor([0.9, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    >>> cert = certify(net, x, sigma=0.25, n=10_000, generator=make_generator(0))
    >>> cert.prediction.tolist()
    [1]
    >>> bool(0.3 < cert.radius[0] < 0.4)  # the base classifier's boundary is 0.4 away
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.errors import InvalidParameterError, ModelError
from robustlab.models.base import check_logits
from robustlab.tensors import check_images

#: A progress callback: receives the number of noisy samples evaluated so far.
Progress = Callable[[int], None]


@dataclass
class Certificate:
    """What :func:`certify` found for a batch of ``N`` images (numpy arrays, on CPU).

    Attributes:
        prediction: ``(N,)`` int64, the smoothed classifier's class, or ``-1`` for an abstention
            (``p_lower <= 0.5``).
        radius: ``(N,)`` float64, the certified L2 radius ``sigma * Phi^{-1}(p_lower)``; 0 for
            an abstention.
        p_lower: ``(N,)`` float64, the one-sided ``(1 - alpha)`` Clopper-Pearson lower bound on
            the probability of the top class under noise.
        counts: ``(N,)`` int64, how many of the ``n`` estimation draws the base model gave the
            top class (selected on the ``n0`` selection draws).
        n0: selection draws per image.
        n: estimation draws per image.
        alpha: the failure probability of each certificate.
        sigma: the noise standard deviation, in ``[0, 1]`` pixel units.

    Example:
        >>> import numpy as np
        >>> cert = Certificate(
        ...     prediction=np.array([0, 1, -1]), radius=np.array([0.5, 0.1, 0.0]),
        ...     p_lower=np.array([0.98, 0.66, 0.4]), counts=np.array([99, 70, 45]),
        ...     n0=10, n=100, alpha=0.001, sigma=0.25)
        >>> cert.certified_accuracy(np.array([0, 0, 2]), [0.0, 0.25]).tolist()
        [0.3333333333333333, 0.3333333333333333]
    """

    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    counts: np.ndarray
    n0: int
    n: int
    alpha: float
    sigma: float

    def __len__(self) -> int:
        return len(self.prediction)

    def certified_accuracy(self, labels: Any, radii: Any) -> np.ndarray:
        """Cohen et al.'s certified accuracy at each radius.

        The fraction of images whose smoothed prediction equals the label *and* whose certified
        radius is at least ``r``; an abstention is never correct.

        Args:
            labels: the true classes, ``(N,)`` integers (numpy array, list or tensor).
            radii: one radius or a sequence of radii ``>= 0``.

        Returns:
            ``(len(radii),)`` float64; NaN for an empty batch.

        Raises:
            InvalidParameterError: for labels of the wrong length or type, or negative radii.
        """
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        y = np.asarray(labels)
        if y.ndim != 1 or len(y) != len(self.prediction):
            raise InvalidParameterError(
                f"labels must be 1-D with one entry per certified image ({len(self.prediction)}),"
                f" got shape {y.shape}"
            )
        if len(y) and not np.issubdtype(y.dtype, np.integer):
            raise InvalidParameterError(f"labels must be integers, got {y.dtype}")
        r = np.atleast_1d(np.asarray(radii, dtype=np.float64))
        if r.ndim != 1 or np.isnan(r).any() or (r < 0).any():
            raise InvalidParameterError(
                f"radii must be one number or a 1-D sequence of numbers >= 0, got {radii!r}"
            )
        if len(y) == 0:
            return np.full(len(r), np.nan)
        correct = (self.prediction == y) & (self.prediction >= 0)
        hits = correct[None, :] & (self.radius[None, :] >= r[:, None])
        return np.asarray(hits.mean(axis=1), dtype=np.float64)


def certify(
    model: nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator,
    num_classes: int | None = None,
    progress: Progress | None = None,
) -> Certificate:
    """Cohen et al.'s CERTIFY for every image of a batch.

    Per image: ``n0`` noisy copies ``x + N(0, sigma^2)`` (unclipped) select the top class
    ``cA``; ``n`` further copies count it (``k`` hits); ``p_lower`` is the one-sided
    ``(1 - alpha)`` Clopper-Pearson bound ``Beta.ppf(alpha, k, n - k + 1)`` (0 when ``k = 0``).
    If ``p_lower > 0.5`` the image is certified as ``cA`` with radius
    ``sigma * Phi^{-1}(p_lower)``; otherwise it abstains (prediction -1, radius 0). All selection
    draws of the batch are taken first, then all estimation draws, in chunks of ``batch_size``.

    Args:
        model: base classifier (or ``denoiser -> classifier`` pipeline) returning ``(N, classes)``
            logits; run in eval mode without gradients, its mode restored afterwards.
        x: images ``(N, C, H, W)`` in ``[0, 1]``, on the model's device.
        sigma: the noise standard deviation (``> 0``, pixel units of ``[0, 1]``).
        n0: selection draws per image (``>= 1``).
        n: estimation draws per image (``>= 1``); the largest radius possible is
            ``sigma * Phi^{-1}(alpha ** (1 / n))``.
        alpha: failure probability (``0 < alpha < 1``).
        batch_size: noisy images per model call (``>= 1``); bounds the memory used.
        generator: the source of every noise draw, on ``x``'s device.
        num_classes: the number of model outputs; inferred from the first call when None.
        progress: called after each chunk with the number of noisy samples evaluated so far,
            out of ``len(x) * (n0 + n)``.

    Returns:
        A :class:`Certificate`.

    Raises:
        InvalidParameterError: for a bad parameter, batch or generator.
        ModelError: for a model that does not return ``(N, classes)`` logits, or returns NaN.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from robustlab.seeding import make_generator
        >>> class Constant(nn.Module):
        ...     def forward(self, x):
        ...         return torch.tensor([0.0, 1.0, 0.0]).expand(len(x), 3)
        >>> cert = certify(Constant(), torch.rand(2, 1, 4, 4), sigma=0.5, n0=10, n=100,
        ...                generator=make_generator(0))
        >>> cert.prediction.tolist(), cert.counts.tolist()
        ([1, 1], [100, 100])
        >>> round(float(cert.p_lower[0]), 4) == round(0.001 ** (1 / 100), 4)
        True
    """
    sigma, alpha = _check_sigma(sigma), _check_alpha(alpha)
    n0, n = _check_count("n0", n0, 100), _check_count("n", n, 100_000)
    batch_size = _check_count("batch_size", batch_size, 1000)
    num_classes = _check_num_classes(num_classes)
    _check_batch(x, generator)
    if progress is not None and not callable(progress):
        raise InvalidParameterError(
            f"progress must be a callable (done_samples: int) -> None or None, got {progress!r}"
        )
    if len(x) == 0:
        empty = np.zeros(0, dtype=np.float64)
        none = np.zeros(0, dtype=np.int64)
        return Certificate(none, empty, empty.copy(), none.copy(), n0, n, alpha, sigma)
    with _eval_mode(model), torch.no_grad():
        selection = _sample_counts(
            model, x, n0, sigma, batch_size, generator, num_classes, progress, 0
        )
        top = selection.argmax(dim=1)
        estimation = _sample_counts(
            model, x, n, sigma, batch_size, generator, selection.shape[1], progress, len(x) * n0
        )
        counts = estimation.gather(1, top[:, None])[:, 0]
    top_np = top.cpu().numpy().astype(np.int64)
    k = counts.cpu().numpy().astype(np.int64)
    p_lower = _clopper_pearson_lower(k, n, alpha)
    certified = p_lower > 0.5
    radius = np.zeros(len(k), dtype=np.float64)
    from scipy import stats  # imported here: SciPy's statistics take 0.5 s to import

    radius[certified] = sigma * stats.norm.ppf(p_lower[certified])
    prediction = np.where(certified, top_np, -1).astype(np.int64)
    return Certificate(prediction, radius, p_lower, k, n0, n, alpha, sigma)


def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator,
    num_classes: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Cohen et al.'s PREDICT: the smoothed classifier's class for every image, or abstain.

    Per image: ``n`` noisy copies ``x + N(0, sigma^2)`` (unclipped); with ``nA`` and ``nB`` the
    counts of the two most frequent classes, return the top class when the two-sided binomial
    test ``scipy.stats.binomtest(nA, nA + nB, 0.5).pvalue <= alpha``, else abstain (-1). The
    returned class differs from ``g(x)`` with probability at most ``alpha``.

    Args:
        model: base classifier returning ``(N, classes)`` logits (eval mode, no gradients).
        x: images ``(N, C, H, W)`` in ``[0, 1]``, on the model's device.
        sigma: the noise standard deviation (``> 0``).
        n: draws per image (``>= 1``).
        alpha: the test's level (``0 < alpha < 1``).
        batch_size: noisy images per model call (``>= 1``).
        generator: the source of every noise draw, on ``x``'s device.
        num_classes: the number of model outputs; inferred from the first call when None.
        progress: called after each chunk with the number of noisy samples evaluated so far,
            out of ``len(x) * n``.

    Returns:
        ``(N,)`` int64 numpy array of classes, ``-1`` for an abstention.

    Raises:
        InvalidParameterError: for a bad parameter, batch or generator.
        ModelError: for a model that does not return ``(N, classes)`` logits, or returns NaN.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from robustlab.seeding import make_generator
        >>> class Constant(nn.Module):
        ...     def forward(self, x):
        ...         return torch.tensor([0.0, 0.0, 1.0]).expand(len(x), 3)
        >>> predict(Constant(), torch.rand(2, 1, 4, 4), sigma=0.5, n=100,
        ...         generator=make_generator(0)).tolist()
        [2, 2]
    """
    sigma, alpha = _check_sigma(sigma), _check_alpha(alpha)
    n = _check_count("n", n, 1000)
    batch_size = _check_count("batch_size", batch_size, 1000)
    num_classes = _check_num_classes(num_classes)
    _check_batch(x, generator)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    with _eval_mode(model), torch.no_grad():
        counts_t = _sample_counts(
            model, x, n, sigma, batch_size, generator, num_classes, progress, 0
        )
    counts = counts_t.cpu().numpy().astype(np.int64)
    top = counts.argmax(axis=1)
    n_a = counts[np.arange(len(counts)), top]
    rest = counts.copy()
    rest[np.arange(len(counts)), top] = -1
    n_b = rest.max(axis=1).clip(min=0) if counts.shape[1] > 1 else np.zeros_like(n_a)
    from scipy import stats

    prediction = np.full(len(counts), -1, dtype=np.int64)
    for i, (a, b) in enumerate(zip(n_a.tolist(), n_b.tolist(), strict=True)):
        if stats.binomtest(a, a + b, 0.5).pvalue <= alpha:
            prediction[i] = top[i]
    return prediction


def _clopper_pearson_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bounds for ``k`` successes out of ``n``."""
    from scipy import stats

    bound = np.zeros(len(k), dtype=np.float64)
    hit = k > 0
    bound[hit] = stats.beta.ppf(alpha, k[hit], n - k[hit] + 1)
    return bound


def _sample_counts(
    model: nn.Module,
    x: torch.Tensor,
    num: int,
    sigma: float,
    batch_size: int,
    generator: torch.Generator,
    num_classes: int | None,
    progress: Progress | None,
    done: int,
) -> torch.Tensor:
    """Per-image counts ``(N, classes)`` of the base model's classes on ``num`` noisy copies.

    The ``N * num`` noisy copies are enumerated image by image and evaluated ``batch_size`` at
    a time; a chunk may straddle several images.
    """
    total = len(x) * num
    classes = num_classes
    counts: torch.Tensor | None = None
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        owner = torch.arange(start, stop, device=x.device) // num
        noise = torch.randn(
            (stop - start, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype
        )
        noisy = noise.mul_(sigma).add_(x.index_select(0, owner))
        logits = _check_model_output(model(noisy), stop - start, classes)
        classes = logits.shape[1]
        if counts is None:
            counts = torch.zeros(len(x) * classes, dtype=torch.int64, device=x.device)
        top = logits.argmax(dim=1).to(counts.device)
        counts.index_add_(0, owner * classes + top, torch.ones_like(top))
        if progress is not None:
            progress(done + stop)
    assert counts is not None and classes is not None  # total >= 1
    return counts.view(len(x), classes)


def _check_model_output(logits: Any, batch: int, num_classes: int | None) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise ModelError(
            f"the model returned {type(logits).__name__}; robustlab needs a logits tensor"
        )
    if num_classes is None:
        if logits.ndim != 2 or logits.shape[1] < 1:
            raise ModelError(
                f"the model returned a tensor of shape {tuple(logits.shape)} for a batch of "
                f"{batch} images; robustlab needs logits of shape ({batch}, classes), one row "
                "per image and one column per class"
            )
        num_classes = logits.shape[1]
    return check_logits(logits, batch, num_classes)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration of the sampling; every module's former mode restored."""
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in training:
            module.training = flag


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise InvalidParameterError(f"sigma must be a number > 0 (e.g. 0.25), got {sigma!r}")
    value = float(sigma)
    if not (value > 0.0 and math.isfinite(value)):
        raise InvalidParameterError(
            f"sigma must be a finite number > 0 (e.g. 0.25, in [0, 1] pixel units), got {sigma!r}"
        )
    return value


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise InvalidParameterError(f"alpha must be a number in (0, 1) (e.g. 0.001), got {alpha!r}")
    value = float(alpha)
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise InvalidParameterError(
            f"alpha must lie strictly between 0 and 1 (e.g. 0.001), got {alpha!r}"
        )
    return value


def _check_count(name: str, value: int, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidParameterError(
            f"{name} must be an integer >= 1 (e.g. {example}), got {value!r}"
        )
    return int(value)


def _check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is None:
        return None
    return _check_count("num_classes", num_classes, 10)


def _check_batch(x: torch.Tensor, generator: torch.Generator) -> None:
    empty = isinstance(x, torch.Tensor) and x.ndim == 4 and len(x) == 0
    check_images(x.new_zeros((1, *x.shape[1:])) if empty else x, "images to certify")
    if not isinstance(generator, torch.Generator):
        raise InvalidParameterError(
            "randomised smoothing draws its noise from an explicit generator: pass "
            "generator=robustlab.seeding.make_generator(seed, x.device), got "
            f"{type(generator).__name__}"
        )
    if torch.device(generator.device).type != x.device.type:
        raise InvalidParameterError(
            f"the generator is on {generator.device} but the images are on {x.device}; make it "
            "with robustlab.seeding.make_generator(seed, x.device)"
        )
