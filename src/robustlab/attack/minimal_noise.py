"""The minimal additive noise that flips a classifier's decision (aghdam2016, Section 3).

For an image ``X`` of true class ``c``, aghdam2016 look for the noise ``r`` that makes the
network misclassify ``X + r`` *with the slimmest margin*, by minimising (their Eqs. 2-3)

    psi(L(X + r), c) + lambda * ||r||_2,
    psi(L, c) = beta * L[c]      while argmax L = c,
              = L[k] - L[c]      once another class k = argmax L wins,

where ``L`` is the network's score vector, "in [0, 1]^K" in the paper, hence the softmax
(``scores="logits"`` uses the raw logits instead). The ``beta`` branch rewards lowering the true
class's score while the image is still classified correctly; once it is not, the objective
stops pushing (the margin term is smallest right at the decision boundary) and only the norm
keeps shrinking. They minimise it with a real-coded genetic algorithm (:func:`genetic_minimize`):
tournament selection of size 5, arithmetic / intermediate / uniform crossover, mutation of some
genes by small numbers, elitism, and a stop after a maximum number of generations or 50
generations without improvement. Every image's population is evaluated together with every
other image's: ``P`` chromosomes x ``B`` images are one batch of ``P * B`` forward passes
(chunked to ``max_batch`` images).

The objective the paper argues against (Szegedy et al. 2014, its Eq. 1) is here too
(``method="szegedy"``): ``lambda * ||r||_2 + loss(X + r)`` subject to ``X + r`` in ``[0, 1]``,
minimised per ``lambda`` by projected Adam (Szegedy used box-constrained L-BFGS) inside a
per-image line search over ``lambda`` for the largest weight that still misclassifies, as
Szegedy et al. did. Its loss pushes the true class's score all the way down; the paper's point
is that this overshoots the boundary, which the margin column of the comparison shows.

Choices where the paper is silent (all parameters of :class:`GeneticParams`): noise and
``X + r`` live in the ``[0, 1]`` pixel scale (the paper's mutation range [-10, 10] reads as
0-255 units, i.e. +-10/255 = +-0.039 here); the box ``X + r`` in ``[0, 1]`` is enforced by
clipping every offspring (and the initial population); the initial population is the zero
noise plus uniform noise at scales spread evenly up to ``init_scale`` (default 3.0, so the
larger scales are cut by that clipping); mutation is Gaussian (the brief; the paper says "a
small number in [-10, 10]" added to "some of the genes"): by default each gene is mutated with
probability ``mutation_rate`` = 0.05 by adding N(0, ``mutation_sigma``^2) with
``mutation_sigma`` = 0.1, i.e. a standard deviation of 25.5 in 0-255 units, wider than the
paper's range; ``lambda``, ``beta``, population and generations are ours.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # class 0 while sum(x) > 1.5
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([0.0, 1.5]))
    >>> images, labels = torch.full((3, 1, 2, 2), 0.5), torch.zeros(3, dtype=torch.long)
    >>> found = minimal_noise_search(net, images, labels, method="ga",
    ...     generator=torch.Generator().manual_seed(0), ga=GeneticParams(generations=100))
    >>> found.success.tolist(), found.new_class.tolist()
    ([True, True, True], [1, 1, 1])
    >>> bool((found.norm < 0.5).all())  # the closest misclassified point is 0.25 away
    True
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack.base import ATTACKS, Attack
from robustlab.errors import InvalidParameterError, ModelError
from robustlab.metrics.image_quality import psnr
from robustlab.models.base import check_logits
from robustlab.tensors import check_images

Method = Literal["ga", "szegedy"]
ScoreSpace = Literal["softmax", "logits"]
METHODS: tuple[Method, ...] = ("ga", "szegedy")
CROSSOVERS = ("arithmetic", "intermediate", "uniform")

# fitness(candidates (b, n, D), problem rows (b,)) -> (b, n); lower is better.
FitnessFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_P = TypeVar("_P", "GeneticParams", "SzegedyParams")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidParameterError(message)


@dataclass(frozen=True)
class GeneticParams:
    """The objective's weights and the genetic algorithm's settings (aghdam2016 Section 3).

    Args:
        lam: lambda, the weight of ``||r||_2`` (noise on the [0, 1] scale); >= 0.
        beta: multiplier of the true class's score while the image is still classified
            correctly; > 0. A correct image scores at least ``beta / K`` (``K`` classes), a
            misclassified one at most ``1 + lam * ||r||``: ``beta`` should keep the first
            above the second for the noise sizes the search meets.
        scores: ``softmax`` (the paper's scores in [0, 1]) or ``logits``.
        population: chromosomes per image; at least ``tournament`` and more than ``elite``.
        generations: the maximum number of generations.
        patience: stop an image after this many generations without improvement (paper: 50).
        tournament: tournament size (paper: 5).
        elite: best chromosomes copied unchanged into the next generation (elitism).
        p_arithmetic: weight of arithmetic crossover (one mixing weight per child: the child
            lies on the segment between its parents).
        p_intermediate: weight of intermediate crossover (one mixing weight per gene: each gene
            lies between the parents' genes).
        p_uniform: weight of uniform crossover (each gene copied from one parent).
        mutation_rate: probability that a gene is mutated.
        mutation_sigma: standard deviation of the Gaussian added to a mutated gene.
        init_scale: the initial noise of chromosome ``j`` is uniform in
            ``[-s_j, s_j]`` with ``s_j`` spread evenly over ``(0, init_scale]``; chromosome 0 is
            the zero noise.
    """

    lam: float = 1.0
    beta: float = 100.0
    scores: ScoreSpace = "softmax"
    population: int = 30
    generations: int = 300
    patience: int = 50
    tournament: int = 5
    elite: int = 1
    p_arithmetic: float = 1 / 3
    p_intermediate: float = 1 / 3
    p_uniform: float = 1 / 3
    mutation_rate: float = 0.05
    mutation_sigma: float = 0.1
    init_scale: float = 3.0

    def __post_init__(self) -> None:
        _require(self.lam >= 0, f"lam (lambda) must be >= 0, got {self.lam}")
        _require(self.beta > 0, f"beta must be > 0, got {self.beta}")
        _require(
            self.scores in ("softmax", "logits"),
            f"scores must be 'softmax' or 'logits', got {self.scores!r}",
        )
        _require(self.tournament >= 1, f"tournament must be >= 1, got {self.tournament}")
        _require(
            self.population >= self.tournament,
            f"population ({self.population}) must be at least the tournament size "
            f"({self.tournament}); raise population or lower tournament",
        )
        _require(
            0 <= self.elite < self.population,
            f"elite must be in [0, population), got {self.elite} for population {self.population}",
        )
        _require(self.generations >= 0, f"generations must be >= 0, got {self.generations}")
        _require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        weights = (self.p_arithmetic, self.p_intermediate, self.p_uniform)
        _require(
            all(w >= 0 for w in weights) and sum(weights) > 0,
            f"crossover weights must be >= 0 and not all 0, got {weights}",
        )
        _require(
            0 <= self.mutation_rate <= 1,
            f"mutation_rate must be in [0, 1], got {self.mutation_rate}",
        )
        _require(
            self.mutation_sigma >= 0, f"mutation_sigma must be >= 0, got {self.mutation_sigma}"
        )
        _require(self.init_scale > 0, f"init_scale must be > 0, got {self.init_scale}")

    @property
    def crossover_probabilities(self) -> tuple[float, float, float]:
        """Arithmetic, intermediate and uniform crossover probabilities (summing to 1)."""
        total = self.p_arithmetic + self.p_intermediate + self.p_uniform
        return (self.p_arithmetic / total, self.p_intermediate / total, self.p_uniform / total)


@dataclass(frozen=True)
class SzegedyParams:
    """Szegedy et al.'s objective ``lambda * ||r||_2 + loss(X + r)`` and its solver.

    Args:
        lam: the first lambda of the line search; > 0.
        target: ``runner_up``: the loss is the cross-entropy towards the class that scores
            second on the clean image (Szegedy's targeted form); ``true``: the loss is the
            softmax score of the true class (aghdam2016's reading of Eq. 1).
        steps: projected Adam steps per lambda.
        rounds: lambdas tried per image (the line search); 1 keeps ``lam``.
        lr: Adam's step size (pixels on the [0, 1] scale).
    """

    lam: float = 0.1
    target: Literal["runner_up", "true"] = "runner_up"
    steps: int = 50
    rounds: int = 5
    lr: float = 0.01

    def __post_init__(self) -> None:
        _require(self.lam > 0, f"lam (lambda) must be > 0, got {self.lam}")
        _require(
            self.target in ("runner_up", "true"),
            f"target must be 'runner_up' or 'true', got {self.target!r}",
        )
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _require(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")


def make_params(kind: type[_P], values: Mapping[str, Any] | None) -> _P:
    """Build ``kind`` from a mapping (a study file's section), naming unknown keys.

    Raises:
        InvalidParameterError: for an unknown key or an out-of-range value.
    """
    values = dict(values or {})
    known = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidParameterError(
            f"unknown {kind.__name__} parameter(s) {unknown}; valid: {', '.join(known)}"
        )
    return kind(**values)


@dataclass(frozen=True)
class MinimalNoiseResult:
    """Per-image outcome of a minimal-noise search; every array has one entry per image.

    ``margin`` is ``max_{j != c} p_j - p_c`` on the softmax of ``X + r``: positive and small
    when the image is misclassified near the boundary, negative while it is still correct.
    ``forward_passes`` counts the model evaluations of the search: the genetic algorithm's
    fitness evaluations; for Szegedy, ``1 + rounds * (steps + 1)`` (the clean pass that picks
    the target, every Adam step, and the check that ends each round), with ``rounds * steps``
    ``backward_passes``. The final measurement of the result is not counted for either.
    ``seconds`` is each image's share of the wall time.
    """

    method: str
    noise: np.ndarray  # (N, C, H, W) float32, X + r in [0, 1]
    labels: np.ndarray
    clean_class: np.ndarray
    new_class: np.ndarray
    norm: np.ndarray
    psnr: np.ndarray
    margin: np.ndarray
    logit_margin: np.ndarray
    success: np.ndarray
    forward_passes: np.ndarray
    backward_passes: np.ndarray
    iterations: np.ndarray  # generations (ga) or optimiser steps (szegedy)
    seconds: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    ARRAYS = (
        "noise", "labels", "clean_class", "new_class", "norm", "psnr", "margin",
        "logit_margin", "success", "forward_passes", "backward_passes", "iterations", "seconds",
    )  # fmt: skip

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def attacked(self) -> np.ndarray:
        """Images the model classifies correctly without noise (the ones a search must flip)."""
        return np.asarray(self.clean_class == self.labels)

    def summary(self) -> dict[str, float]:
        """Success rate, noise size and cost; noise figures over attacked, successful images."""
        attacked = self.attacked
        won = attacked & self.success
        finite = won & np.isfinite(self.psnr)

        def mean(values: np.ndarray, mask: np.ndarray) -> float:
            return float(values[mask].mean()) if mask.any() else math.nan

        return {
            "images": float(len(self)),
            "attacked": float(attacked.sum()),
            "success_rate": float(won.sum() / attacked.sum()) if attacked.any() else math.nan,
            "mean_norm": mean(self.norm, won),
            "median_norm": float(np.median(self.norm[won])) if won.any() else math.nan,
            "mean_psnr": mean(self.psnr, finite),
            "median_psnr": float(np.median(self.psnr[finite])) if finite.any() else math.nan,
            "mean_margin": mean(self.margin, won),
            "seconds_per_image": float(self.seconds.mean()) if len(self) else math.nan,
            "forward_passes_per_image": float(self.forward_passes.mean()) if len(self) else 0.0,
            "backward_passes_per_image": float(self.backward_passes.mean()) if len(self) else 0.0,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name (for ``np.savez``)."""
        return {name: getattr(self, name) for name in self.ARRAYS}

    @classmethod
    def from_arrays(
        cls, method: str, arrays: Mapping[str, np.ndarray], params: dict[str, Any] | None = None
    ) -> MinimalNoiseResult:
        """Rebuild a result from :meth:`arrays` (e.g. a loaded ``.npz``)."""
        values = {name: np.asarray(arrays[name]) for name in cls.ARRAYS}
        values["noise"] = values["noise"].astype(np.float32)
        return cls(method=method, params=dict(params or {}), **values)


# --------------------------------------------------------------------------------------------
# The objective


def psi(scores: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """aghdam2016 Eq. 3 for a batch: ``beta * L[c]`` if ``c`` wins, else ``L[k] - L[c]``.

    Args:
        scores: ``(N, K)`` score vectors ``L``.
        labels: ``(N,)`` true classes ``c``.
        beta: the multiplier of the still-correct branch.
    """
    true = scores.gather(1, labels[:, None])[:, 0]
    top, winner = scores.max(dim=1)
    return torch.where(winner == labels, beta * true, top - true)


def _margins(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_{j != c} s_j - s_c`` on softmax scores and on logits."""
    out = []
    for scores in (logits.softmax(dim=1), logits):
        true = scores.gather(1, labels[:, None])[:, 0]
        others = scores.scatter(1, labels[:, None], float("-inf"))
        out.append(others.max(dim=1).values - true)
    return out[0], out[1]


def _check_output(output: object, batch: int, num_classes: int | None) -> torch.Tensor:
    """The model's output if it is ``(batch, num_classes)`` logits (any width when None)."""
    if not isinstance(output, torch.Tensor):
        raise ModelError(
            f"the model returned a {type(output).__name__}, not a tensor; robustlab needs "
            f"logits of shape ({batch}, classes): wrap the model so that forward() returns "
            "only the logits (e.g. the first element of a tuple, or a dict's 'logits')"
        )
    if num_classes is None:
        if output.ndim != 2:
            raise ModelError(
                f"the model returned a tensor of shape {tuple(output.shape)} for a batch of "
                f"{batch}; robustlab needs logits of shape ({batch}, classes)"
            )
        num_classes = int(output.shape[1])
    return check_logits(output, batch, num_classes)


def _logits(
    model: nn.Module, x: torch.Tensor, num_classes: int | None, max_batch: int
) -> torch.Tensor:
    parts = [
        _check_output(model(chunk), len(chunk), num_classes).float()
        for chunk in torch.split(x, max_batch)
    ]
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# Genetic operators (batched over problems: populations are (B, P, D))


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    if generator.device.type != device.type:
        raise InvalidParameterError(
            f"the generator lives on {generator.device} but the data on {device}; create it "
            f"with robustlab.seeding.make_generator(seed, device)"
        )


def tournament_select(
    fitness: torch.Tensor, count: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Indices of ``count`` tournament winners per problem (lowest fitness wins).

    Each tournament draws ``size`` distinct chromosomes uniformly at random.

    Args:
        fitness: ``(B, P)`` fitness of every chromosome.
        count: winners per problem.
        size: tournament size, at most ``P``.
        generator: the random source.

    Returns:
        ``(B, count)`` indices into the population.
    """
    b, p = fitness.shape
    _require(1 <= size <= p, f"tournament size {size} must be in [1, population={p}]")
    keys = torch.rand(b, count, p, generator=generator, device=fitness.device)
    entrants = keys.topk(size, dim=2).indices  # a random subset of `size` distinct members
    scores = fitness[:, None, :].expand(b, count, p).gather(2, entrants)
    return entrants.gather(2, scores.argmin(dim=2, keepdim=True))[..., 0]


def arithmetic_crossover(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``alpha * a + (1 - alpha) * b`` with one ``alpha ~ U(0, 1)`` per child (on the segment)."""
    alpha = torch.rand(*a.shape[:-1], 1, generator=generator, device=a.device)
    return alpha * a + (1 - alpha) * b


def intermediate_crossover(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``a + alpha * (b - a)`` with one ``alpha ~ U(0, 1)`` per gene (each between parents)."""
    alpha = torch.rand(a.shape, generator=generator, device=a.device)
    return a + alpha * (b - a)


def uniform_crossover(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each gene copied from ``a`` or ``b`` with probability one half."""
    take_a = torch.rand(a.shape, generator=generator, device=a.device) < 0.5
    return torch.where(take_a, a, b)


def crossover(
    a: torch.Tensor,
    b: torch.Tensor,
    probabilities: tuple[float, float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One child per parent pair, the operator drawn per child with ``probabilities``.

    Returns:
        The children and the operator each used (0 arithmetic, 1 intermediate, 2 uniform).
    """
    cumulative = torch.tensor(probabilities, device=a.device, dtype=torch.float32).cumsum(0)
    draw = torch.rand(a.shape[:-1], generator=generator, device=a.device)
    kind = (draw[..., None] >= cumulative[:-1]).sum(dim=-1)
    children = torch.where(
        (kind == 0)[..., None],
        arithmetic_crossover(a, b, generator),
        torch.where(
            (kind == 1)[..., None],
            intermediate_crossover(a, b, generator),
            uniform_crossover(a, b, generator),
        ),
    )
    return children, kind


def gaussian_mutation(
    children: torch.Tensor, rate: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """Add ``N(0, sigma^2)`` to each gene with probability ``rate``; the others stay as they are."""
    hit = torch.rand(children.shape, generator=generator, device=children.device) < rate
    step = torch.randn(children.shape, generator=generator, device=children.device) * sigma
    return torch.where(hit, children + step, children)


@dataclass
class GeneticOutcome:
    """What :func:`genetic_minimize` found for each of ``B`` problems."""

    best: torch.Tensor  # (B, D)
    fitness: torch.Tensor  # (B,)
    generations: torch.Tensor  # (B,) generations run before the stop
    evaluations: torch.Tensor  # (B,) fitness evaluations
    seconds: torch.Tensor  # (B,) share of the wall time


def genetic_minimize(
    fitness: FitnessFn,
    initial: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    params: GeneticParams,
    generator: torch.Generator,
) -> GeneticOutcome:
    """Minimise ``B`` independent problems with a real-coded genetic algorithm, all at once.

    Per generation and problem: ``P - elite`` children, each from two tournament winners by a
    crossover drawn per child, mutated, clipped into ``[lower, upper]``; the ``elite`` best of
    the old population survive unchanged. A problem stops after ``params.patience`` generations
    in which its best fitness did not strictly decrease, or after ``params.generations``;
    stopped problems leave the batch (no more evaluations). The fitness must be deterministic:
    survivors are not re-evaluated.

    Args:
        fitness: evaluates candidates ``(b, n, D)`` of problems ``rows`` ``(b,)`` to ``(b, n)``.
        initial: ``(B, P, D)`` initial populations (clipped into the bounds).
        lower: ``(B, D)`` lower bounds of the genes.
        upper: ``(B, D)`` upper bounds of the genes.
        params: population, operators and stopping rule (``population`` must equal ``P``).
        generator: every random draw comes from it (on ``initial``'s device).
    """
    n_problems, size, _ = initial.shape
    _require(
        size == params.population,
        f"initial population has {size} chromosomes, params.population is {params.population}",
    )
    device = initial.device
    _check_generator(generator, device)
    lower, upper = lower[:, None, :], upper[:, None, :]
    began = time.perf_counter()
    population = torch.maximum(torch.minimum(initial, upper), lower)
    scores = fitness(population, torch.arange(n_problems, device=device))
    evaluations = torch.full((n_problems,), size, dtype=torch.int64, device=device)
    seconds = torch.full(
        (n_problems,), (time.perf_counter() - began) / max(n_problems, 1), dtype=torch.float64
    )
    best = scores.min(dim=1).values
    stale = torch.zeros(n_problems, dtype=torch.int64, device=device)
    generations = torch.zeros(n_problems, dtype=torch.int64, device=device)
    active = torch.arange(n_problems, device=device)
    offspring = size - params.elite
    probabilities = params.crossover_probabilities
    for _ in range(params.generations):
        if len(active) == 0:
            break
        began = time.perf_counter()
        members, member_scores = population[active], scores[active]
        elite = member_scores.argsort(dim=1, stable=True)[:, : params.elite]
        first = tournament_select(member_scores, offspring, params.tournament, generator)
        second = tournament_select(member_scores, offspring, params.tournament, generator)
        children, _ = crossover(
            _take(members, first), _take(members, second), probabilities, generator
        )
        children = gaussian_mutation(
            children, params.mutation_rate, params.mutation_sigma, generator
        )
        children = torch.maximum(torch.minimum(children, upper[active]), lower[active])
        child_scores = fitness(children, active)
        population[active] = torch.cat([_take(members, elite), children], dim=1)
        scores[active] = torch.cat([member_scores.gather(1, elite), child_scores], dim=1)
        current = scores[active].min(dim=1).values
        improved = current < best[active]
        best[active] = torch.minimum(current, best[active])
        stale[active] = torch.where(improved, 0, stale[active] + 1)
        generations[active] += 1
        evaluations[active] += offspring
        seconds[active.cpu()] += (time.perf_counter() - began) / len(active)
        active = active[stale[active] < params.patience]
    winner = scores.argmin(dim=1)
    return GeneticOutcome(
        best=_take(population, winner[:, None])[:, 0],
        fitness=scores.gather(1, winner[:, None])[:, 0],
        generations=generations,
        evaluations=evaluations,
        seconds=seconds,
    )


def _take(population: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``population[b, index[b, j]]`` for ``(B, P, D)`` and ``(B, n)`` -> ``(B, n, D)``."""
    return population.gather(1, index[..., None].expand(-1, -1, population.shape[2]))


# --------------------------------------------------------------------------------------------
# The two searches


def noise_fitness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: GeneticParams,
    num_classes: int,
    max_batch: int = 8192,
) -> FitnessFn:
    """aghdam2016's objective ``psi(L(X + r), c) + lambda ||r||_2`` as a batched fitness.

    The returned function maps candidate noises ``(b, n, D)`` of images ``rows`` ``(b,)`` to
    ``(b, n)`` float64 fitness values, sending all ``b * n`` noisy images through the model
    together (``max_batch`` at a time).
    """
    n, shape = len(images), images.shape[1:]
    flat = images.reshape(n, -1)

    def fitness(candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        b, m, _ = candidates.shape
        noisy = (flat[rows][:, None, :] + candidates).reshape(b * m, *shape)
        with torch.inference_mode():
            logits = _logits(model, noisy, num_classes, max_batch)
        # float64: a confident float32 softmax rounds L[c] to exactly 1 and the beta branch
        # would lose every signal; in float64 it keeps differences down to about 1e-16.
        scores = logits.double()
        scores = scores.softmax(dim=1) if params.scores == "softmax" else scores
        objective = psi(scores, labels[rows].repeat_interleave(m), params.beta).view(b, m)
        penalty: torch.Tensor = params.lam * candidates.double().norm(dim=2)
        return objective + penalty

    return fitness


def _genetic_search(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    params: GeneticParams,
    generator: torch.Generator,
    max_batch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(x)
    flat = x.reshape(n, -1)
    genes = flat.shape[1]
    fitness = noise_fitness(model, x, labels, params, num_classes, max_batch)
    scales = torch.linspace(0, params.init_scale, params.population, device=x.device)
    unit = torch.rand(n, params.population, genes, generator=generator, device=x.device)
    initial = (2 * unit - 1) * scales[None, :, None]  # chromosome 0: the zero noise
    found = genetic_minimize(fitness, initial, -flat, 1 - flat, params, generator)
    zero = torch.zeros_like(found.evaluations)
    return (
        found.best.reshape(x.shape),
        found.evaluations,
        zero,
        found.generations,
        found.seconds,
    )


def _szegedy_search(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    params: SzegedyParams,
    max_batch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(x)
    began = time.perf_counter()
    with torch.no_grad():
        clean = _logits(model, x, num_classes, max_batch)
        target = clean.scatter(1, labels[:, None], float("-inf")).argmax(dim=1)
    lam = torch.full((n,), params.lam, dtype=torch.float64, device=x.device)
    low = torch.zeros_like(lam)  # largest lambda known to succeed
    high = torch.full_like(lam, math.inf)  # smallest lambda known to fail
    best = torch.zeros_like(x)
    best_norm = torch.full((n,), math.inf, device=x.device)
    best_margin = torch.full((n,), -math.inf, device=x.device)
    for _ in range(params.rounds):
        noise = _szegedy_round(
            model, x, labels, target, lam.float(), num_classes, params, max_batch
        )
        with torch.no_grad():
            logits = _logits(model, x + noise, num_classes, max_batch)
            won = logits.argmax(dim=1) != labels
            norm = noise.flatten(1).norm(dim=1)
            margin = _margins(logits, labels)[0]
            # Keep the smallest misclassifying noise; until one is found, the closest miss.
            better = torch.where(
                won, norm < best_norm, torch.isinf(best_norm) & (margin > best_margin)
            )
            best = torch.where(better[:, None, None, None], noise, best)
            best_norm = torch.where(better & won, norm, best_norm)
            best_margin = torch.where(better, margin, best_margin)
            # Bisection on log lambda: a success allows more weight on the norm, a failure less.
            low = torch.where(won, lam, low)
            high = torch.where(won, high, lam)
            lam = torch.where(
                won,
                torch.where(torch.isinf(high), lam * 10, (lam * high).sqrt()),
                torch.where(low == 0, lam / 10, (lam * low).sqrt()),
            )
    steps = params.steps * params.rounds
    # Forward passes: the clean pass that picks the target, one per Adam step, and the
    # misclassification check that ends each round; backward passes: one per Adam step.
    forwards = torch.full((n,), 1 + steps + params.rounds, dtype=torch.int64, device=x.device)
    backwards = torch.full((n,), steps, dtype=torch.int64, device=x.device)
    per_image = (time.perf_counter() - began) / max(n, 1)
    return (
        best,
        forwards,
        backwards,
        backwards.clone(),
        torch.full((n,), per_image, dtype=torch.float64),
    )


def _szegedy_round(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    target: torch.Tensor,
    lam: torch.Tensor,
    num_classes: int,
    params: SzegedyParams,
    max_batch: int,
) -> torch.Tensor:
    """Projected Adam on ``lam * ||r|| + loss(X + r)`` from ``r = 0``, every image at once."""
    chunks = [
        torch.zeros_like(part, requires_grad=True) for part in torch.split(x, max_batch)
    ]  # Adam is elementwise, so one leaf per chunk is the same as one for the batch
    optimizer = torch.optim.Adam(chunks, lr=params.lr)
    spans = list(zip(*(torch.split(t, max_batch) for t in (x, labels, target, lam)), strict=True))
    for _ in range(params.steps):
        for noise, (clean, y, goal, weight) in zip(chunks, spans, strict=True):
            logits = _check_output(model(clean + noise), len(clean), num_classes).float()
            if params.target == "runner_up":
                loss = F.cross_entropy(logits, goal, reduction="none")
            else:
                loss = logits.softmax(dim=1).gather(1, y[:, None])[:, 0]
            norm = (noise.flatten(1).square().sum(dim=1) + 1e-12).sqrt()
            (grad,) = torch.autograd.grad((weight * norm + loss).sum(), noise)
            noise.grad = grad
        optimizer.step()
        with torch.no_grad():
            for noise, (clean, *_) in zip(chunks, spans, strict=True):
                noise.copy_((clean + noise).clamp(0, 1) - clean)
    return torch.cat([c.detach() for c in chunks])


def minimal_noise_search(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: Method = "ga",
    generator: torch.Generator | None = None,
    ga: GeneticParams | None = None,
    szegedy: SzegedyParams | None = None,
    num_classes: int | None = None,
    max_batch: int = 8192,
) -> MinimalNoiseResult:
    """The smallest noise ``r`` that makes ``model`` misclassify each ``images + r``.

    Args:
        model: pixel-space images -> logits; evaluated in eval mode (restored afterwards).
        images: ``(N, C, H, W)`` float images in ``[0, 1]`` on the model's device.
        labels: ``(N,)`` true classes.
        method: ``ga`` (aghdam2016's objective, genetic algorithm) or ``szegedy`` (Szegedy et
            al.'s objective, projected Adam with a line search over lambda).
        generator: the random source of the genetic algorithm, on ``images``' device
            (required for ``ga``; ``szegedy`` draws nothing).
        ga: parameters of ``ga`` (defaults: :class:`GeneticParams`).
        szegedy: parameters of ``szegedy`` (defaults: :class:`SzegedyParams`).
        num_classes: the number of logits expected; default: what the model returns.
        max_batch: the most images sent through the model at once (a memory budget).

    Raises:
        InvalidParameterError: bad images, labels, method or parameters.
        ModelError: the model's output is not ``(N, num_classes)`` logits.
    """
    _require(method in METHODS, f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    _require(max_batch >= 1, f"max_batch must be >= 1, got {max_batch}")
    _require(
        not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) >= 1,
        f"images must hold at least one image, got an empty batch of shape "
        f"{tuple(images.shape)}; skip the search when there is nothing to attack",
    )
    check_images(images)
    n = len(images)
    if not isinstance(labels, torch.Tensor):
        raise InvalidParameterError(
            f"labels must be an integer tensor of shape ({n},), got a {type(labels).__name__}; "
            "convert them with torch.as_tensor(labels, dtype=torch.long)"
        )
    _require(
        labels.shape == (n,)
        and not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool),
        f"labels must be an integer tensor of shape ({n},), got {labels.dtype} of shape "
        f"{tuple(labels.shape)}; use one class index per image, e.g. labels.long()",
    )
    labels = labels.to(device=images.device, dtype=torch.int64)
    if method == "ga" and generator is None:
        raise InvalidParameterError(
            "method 'ga' draws random numbers: pass generator=robustlab.seeding."
            "make_generator(seed, device)"
        )
    ga = ga or GeneticParams()
    szegedy = szegedy or SzegedyParams()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = _check_output(model(images[:1].float()), 1, num_classes)
        num_classes = int(probe.shape[1])
        if labels.min() < 0 or labels.max() >= num_classes:
            raise InvalidParameterError(
                f"labels must lie in [0, {num_classes - 1}] for a model with {num_classes} "
                f"classes, got values from {int(labels.min())} to {int(labels.max())}"
            )
        x = images.float()
        if method == "ga":
            assert generator is not None
            outcome = _genetic_search(model, x, labels, num_classes, ga, generator, max_batch)
            params = dataclasses.asdict(ga)
        else:
            outcome = _szegedy_search(model, x, labels, num_classes, szegedy, max_batch)
            params = dataclasses.asdict(szegedy)
        noise, forwards, backwards, iterations, seconds = outcome
        noise = (x + noise).clamp(0, 1) - x  # exact box despite rounding in the search
        with torch.no_grad():
            clean_class = _logits(model, x, num_classes, max_batch).argmax(dim=1)
            logits = _logits(model, x + noise, num_classes, max_batch)
    finally:
        model.train(was_training)
    margin, logit_margin = _margins(logits, labels)
    new_class = logits.argmax(dim=1)

    def cpu(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return MinimalNoiseResult(
        method=method,
        noise=cpu(noise.float()),
        labels=cpu(labels),
        clean_class=cpu(clean_class),
        new_class=cpu(new_class),
        norm=cpu(noise.flatten(1).norm(dim=1).double()),
        psnr=cpu(psnr(x + noise, x).double()),
        margin=cpu(margin.double()),
        logit_margin=cpu(logit_margin.double()),
        success=cpu(new_class != labels),
        forward_passes=cpu(forwards),
        backward_passes=cpu(backwards),
        iterations=cpu(iterations),
        seconds=cpu(seconds),
        params=params,
    )


def minimal_noise_by_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    *,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
    max_batch: int = 8192,
) -> MinimalNoiseResult:
    """Any minimum-norm attack (``fmn``) measured like :func:`minimal_noise_search`.

    The attack runs on chunks of at most ``max_batch`` images; the result holds the same
    per-image arrays as the GA's and Szegedy's, so the minimal-noise section compares them
    in one table. Forward and backward passes are the attack's ``steps`` (one of each per
    step for a gradient attack such as FMN), plus the clean pass.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from robustlab.attack.base import create_attack
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(3, 1, 2, 2)
        >>> found = minimal_noise_by_attack(net, x, net(x).argmax(1),
        ...                                 create_attack("szegedy", steps=5, rounds=1))
        >>> found.method, len(found)
        ('szegedy', 3)
    """
    check_images(images)
    labels = labels.to(device=images.device, dtype=torch.int64)
    began = time.perf_counter()
    noise = torch.cat(
        [
            attack.run(model, chunk, y, generator).adversarial - chunk
            for chunk, y in zip(
                torch.split(images, max_batch), torch.split(labels, max_batch), strict=True
            )
        ]
    )
    seconds = (time.perf_counter() - began) / max(len(images), 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            clean = _logits(model, images, num_classes, max_batch)
            logits = _logits(model, images + noise, int(clean.shape[1]), max_batch)
    finally:
        model.train(was_training)
    margin, logit_margin = _margins(logits, labels)
    new_class = logits.argmax(dim=1)
    steps = int(getattr(attack, "steps", 0) or 0)
    gradient = "gradient" in ATTACKS.entry(_registered_name(attack)).tags
    n = len(images)

    def cpu(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return MinimalNoiseResult(
        method=_registered_name(attack),
        noise=cpu(noise.float()),
        labels=cpu(labels),
        clean_class=cpu(clean.argmax(dim=1)),
        new_class=cpu(new_class),
        norm=cpu(noise.flatten(1).norm(dim=1).double()),
        psnr=cpu(psnr(images + noise, images).double()),
        margin=cpu(margin.double()),
        logit_margin=cpu(logit_margin.double()),
        success=cpu(new_class != labels),
        forward_passes=np.full(n, 1 + steps, dtype=np.int64),
        backward_passes=np.full(n, steps if gradient else 0, dtype=np.int64),
        iterations=np.full(n, steps, dtype=np.int64),
        seconds=np.full(n, seconds, dtype=np.float64),
        params=attack.params(),
    )


def _registered_name(attack: Attack) -> str:
    for entry in ATTACKS:
        if entry.factory is type(attack):
            return entry.name
    return type(attack).__name__.lower()


__all__ = [
    "CROSSOVERS",
    "METHODS",
    "GeneticOutcome",
    "GeneticParams",
    "MinimalNoiseResult",
    "SzegedyParams",
    "arithmetic_crossover",
    "crossover",
    "gaussian_mutation",
    "genetic_minimize",
    "intermediate_crossover",
    "make_params",
    "minimal_noise_by_attack",
    "minimal_noise_search",
    "noise_fitness",
    "psi",
    "tournament_select",
    "uniform_crossover",
]
