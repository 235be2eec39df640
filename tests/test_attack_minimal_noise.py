"""The minimal-noise search (aghdam2016 Section 3): objective, GA operators, solvers, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.attack.minimal_noise import (
    GeneticParams,
    MinimalNoiseResult,
    SzegedyParams,
    arithmetic_crossover,
    crossover,
    gaussian_mutation,
    genetic_minimize,
    intermediate_crossover,
    make_params,
    minimal_noise_search,
    noise_fitness,
    psi,
    tournament_select,
    uniform_crossover,
)
from robustlab.errors import ConfigError, InvalidParameterError, ModelError
from robustlab.study.config import parse_config


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear_model(w: torch.Tensor, b: torch.Tensor) -> nn.Module:
    """Logits ``W x + b`` of flattened images."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(w.shape[1], w.shape[0]))
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[1].bias.copy_(b)
    return net


def _tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()


# --- the objective -----------------------------------------------------------------------


def test_psi_matches_the_paper_by_hand() -> None:
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.25, 0.25, 0.5]])
    labels = torch.tensor([0, 0, 1])
    # row 0: c = 0 wins -> beta * L[c] = 10 * 0.7; row 1: k = 1 wins -> 0.6 - 0.3;
    # row 2: k = 2 wins -> 0.5 - 0.25.
    assert psi(scores, labels, beta=10.0).tolist() == pytest.approx([7.0, 0.3, 0.25])


def test_noise_fitness_adds_lambda_times_the_norm() -> None:
    model = _linear_model(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]), torch.tensor([0.0, 1.5]))
    images = torch.full((1, 1, 2, 2), 0.5)
    params = GeneticParams(lam=2.0, beta=3.0)
    fitness = noise_fitness(model, images, torch.tensor([0]), params, num_classes=2)
    r = torch.tensor([[[0.0, 0, 0, 0], [-0.5, -0.5, 0, 0]]])
    got = fitness(r, torch.tensor([0]))
    # r = 0: logits (2, 1.5), class 0 wins: beta * softmax[0]; second: logits (1, 1.5), class 1.
    p0 = 1 / (1 + math.exp(-0.5))
    expected = [3.0 * p0, (p0 - (1 - p0)) + 2.0 * math.sqrt(0.5)]
    assert got[0].tolist() == pytest.approx(expected)


def test_batched_fitness_equals_per_image_fitness() -> None:
    model = _tiny_cnn()
    images = torch.rand(5, 1, 8, 8, generator=_gen(1))
    labels = torch.tensor([0, 1, 2, 0, 1])
    candidates = (torch.rand(5, 7, 64, generator=_gen(2)) - 0.5) * 0.4
    params = GeneticParams()
    batched = noise_fitness(model, images, labels, params, 3)(candidates, torch.arange(5))
    chunked = noise_fitness(model, images, labels, params, 3, max_batch=4)(
        candidates, torch.arange(5)
    )
    for i in range(5):
        alone = noise_fitness(model, images[i : i + 1], labels[i : i + 1], params, 3)(
            candidates[i : i + 1], torch.tensor([0])
        )
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(batched, chunked, rtol=1e-6, atol=1e-9)
    # rows select images: problem 3 alone, addressed by its row index
    some = noise_fitness(model, images, labels, params, 3)(candidates[3:4], torch.tensor([3]))
    torch.testing.assert_close(some[0], batched[3], rtol=1e-6, atol=1e-9)


# --- GA operators ------------------------------------------------------------------------


def test_tournament_of_five_in_a_population_of_five_always_picks_the_best() -> None:
    fitness = torch.tensor([[3.0, 1.0, 4.0, 0.5, 2.0], [9.0, 8.0, 7.0, 6.0, -1.0]])
    winners = tournament_select(fitness, count=50, size=5, generator=_gen())
    assert (winners[0] == 3).all() and (winners[1] == 4).all()


def test_tournament_never_picks_one_of_the_four_worst() -> None:
    fitness = torch.arange(30.0)[None].repeat(3, 1)  # chromosome j has fitness j
    winners = tournament_select(fitness, count=2000, size=5, generator=_gen())
    assert int(winners.max()) <= 25  # 26..29 always meet a better one of five distinct
    assert len(set(winners.flatten().tolist())) > 15  # but the choice is random


def test_arithmetic_child_lies_on_the_segment_between_its_parents() -> None:
    a, b = torch.rand(4, 6, 10, generator=_gen(1)), torch.rand(4, 6, 10, generator=_gen(2))
    child = arithmetic_crossover(a, b, _gen(3))
    alpha = (child - b) / (a - b)
    assert torch.allclose(alpha, alpha[..., :1].expand_as(alpha), atol=1e-4)  # one per child
    assert (alpha >= -1e-5).all() and (alpha <= 1 + 1e-5).all()
    assert alpha[..., 0].std() > 0.1  # different children, different weights


def test_intermediate_child_has_each_gene_between_the_parents() -> None:
    a, b = torch.rand(4, 6, 10, generator=_gen(1)), torch.rand(4, 6, 10, generator=_gen(2))
    child = intermediate_crossover(a, b, _gen(3))
    assert (child >= torch.minimum(a, b) - 1e-7).all()
    assert (child <= torch.maximum(a, b) + 1e-7).all()
    alpha = (child - a) / (b - a)
    assert alpha.std(dim=-1).min() > 0.05  # one weight per gene, not per child


def test_uniform_child_takes_every_gene_from_one_parent() -> None:
    a, b = torch.rand(4, 6, 100, generator=_gen(1)), torch.rand(4, 6, 100, generator=_gen(2))
    child = uniform_crossover(a, b, _gen(3))
    from_a, from_b = child == a, child == b
    assert (from_a | from_b).all()
    assert 0.4 < from_a.float().mean() < 0.6


def test_crossover_draws_the_operator_per_child_with_the_given_probabilities() -> None:
    a, b = torch.rand(20, 50, 8, generator=_gen(1)), torch.rand(20, 50, 8, generator=_gen(2))
    _, kind = crossover(a, b, (0.2, 0.3, 0.5), _gen(3))
    shares = [float((kind == k).float().mean()) for k in range(3)]
    assert shares == pytest.approx([0.2, 0.3, 0.5], abs=0.04)
    only_uniform, kind = crossover(a, b, (0.0, 0.0, 1.0), _gen(3))
    assert (kind == 2).all() and ((only_uniform == a) | (only_uniform == b)).all()


def test_mutation_changes_only_some_genes() -> None:
    children = torch.rand(8, 10, 500, generator=_gen(1))
    mutated = gaussian_mutation(children, rate=0.1, sigma=0.05, generator=_gen(2))
    changed = mutated != children
    assert 0.08 < changed.float().mean() < 0.12
    assert (mutated[~changed] == children[~changed]).all()
    assert (mutated - children).abs().max() < 0.05 * 6
    assert torch.equal(gaussian_mutation(children, 0.0, 0.05, _gen(2)), children)
    assert (gaussian_mutation(children, 1.0, 0.05, _gen(2)) != children).all()


def _sphere(target: torch.Tensor):  # type: ignore[no-untyped-def]
    def fitness(candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (candidates - target[rows][:, None, :]).square().sum(dim=2)

    return fitness


def test_elitism_keeps_the_best_chromosome() -> None:
    target = torch.rand(3, 16, generator=_gen(1))
    initial = torch.rand(3, 10, 16, generator=_gen(2))
    initial[:, 4] = target  # the optimum is in the initial population
    bounds = (torch.zeros(3, 16), torch.ones(3, 16))
    kept = genetic_minimize(
        _sphere(target), initial, *bounds, GeneticParams(population=10, generations=30), _gen(3)
    )
    assert torch.equal(kept.best, target) and (kept.fitness == 0).all()
    lost = genetic_minimize(
        _sphere(target),
        initial,
        *bounds,
        GeneticParams(population=10, generations=30, elite=0, mutation_rate=0.5),
        _gen(3),
    )
    assert (lost.fitness > 0).all()  # without elitism the exact optimum does not survive


def test_genetic_algorithm_converges_on_a_sphere() -> None:
    target = torch.rand(4, 8, generator=_gen(1)) * 0.5 + 0.25
    initial = torch.rand(4, 20, 8, generator=_gen(2))
    found = genetic_minimize(
        _sphere(target),
        initial,
        torch.zeros(4, 8),
        torch.ones(4, 8),
        GeneticParams(population=20, generations=300, mutation_sigma=0.02, mutation_rate=0.2),
        _gen(3),
    )
    start = _sphere(target)(initial, torch.arange(4)).min(dim=1).values
    assert (found.fitness < start / 20).all()
    assert (found.evaluations == 20 + found.generations * 19).all()


def test_stops_after_patience_generations_without_improvement() -> None:
    calls = [0]

    def improves_ten_times(candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        value = -float(min(calls[0], 10))  # better on each of the first 10 generations
        calls[0] += 1
        return torch.full(candidates.shape[:2], value, dtype=torch.float64)

    found = genetic_minimize(
        improves_ten_times,
        torch.zeros(2, 6, 3),
        torch.full((2, 3), -1.0),
        torch.ones(2, 3),
        GeneticParams(population=6, generations=1000, patience=50),
        _gen(),
    )
    assert found.generations.tolist() == [60, 60]
    assert found.evaluations.tolist() == [6 + 60 * 5] * 2
    assert calls[0] == 61  # initial population + 60 generations, then nothing more


def test_finished_problems_leave_the_batch() -> None:
    seen: list[list[int]] = []

    def fitness(candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.tolist())
        # problem 0 never improves; problem 1 improves on every call
        values = torch.where(rows == 0, 0.0, -float(len(seen))).to(torch.float64)
        return values[:, None].expand(*candidates.shape[:2]).clone()

    found = genetic_minimize(
        fitness,
        torch.zeros(2, 5, 3),
        torch.full((2, 3), -1.0),
        torch.ones(2, 3),
        GeneticParams(population=5, generations=30, patience=5),
        _gen(),
    )
    assert found.generations.tolist() == [5, 30]
    assert seen[5] == [0, 1] and seen[6] == [1]


# --- the searches --------------------------------------------------------------------------


def _boundary_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-class linear model on 4x4 images whose boundary is well inside the box."""
    w_diff = torch.tensor([1.0, -0.5, 0.8, 0.3] * 4)
    model = _linear_model(torch.stack([w_diff, torch.zeros(16)]), torch.tensor([0.0, 0.0]))
    images = torch.stack([torch.full((1, 4, 4), 0.5), torch.linspace(0.4, 0.6, 16).view(1, 4, 4)])
    labels = torch.zeros(2, dtype=torch.long)
    # distance to the decision boundary w.x = 0: |w.x| / ||w||
    distance = (images.flatten(1) @ w_diff).abs() / w_diff.norm()
    return model, images, labels, distance


def test_szegedy_reaches_the_analytic_distance_to_the_boundary() -> None:
    model, images, labels, distance = _boundary_problem()
    found = minimal_noise_search(
        model, images, labels, method="szegedy", szegedy=SzegedyParams(steps=50, rounds=6, lr=0.02)
    )
    assert found.success.all()
    norm = torch.from_numpy(found.norm).float()
    assert (norm >= distance * (1 - 1e-4)).all()  # nothing beats the analytic minimum
    assert (norm <= distance * 1.1).all(), (norm, distance)
    # 1 clean pass + 6 rounds x (50 Adam steps + 1 check); one backward pass per Adam step
    assert (found.forward_passes == 307).all() and (found.backward_passes == 300).all()


def test_genetic_search_flips_the_linear_model_near_the_boundary() -> None:
    model, images, labels, distance = _boundary_problem()
    found = minimal_noise_search(
        model,
        images,
        labels,
        method="ga",
        generator=_gen(),
        ga=GeneticParams(init_scale=1.0, population=20, generations=100),
    )
    assert found.success.all()
    norm = torch.from_numpy(found.norm).float()
    assert (norm >= distance * (1 - 1e-4)).all()
    assert (norm <= distance * 1.5).all(), (norm, distance)
    assert (found.margin > 0).all() and (found.margin < 0.05).all()  # the slim margin


@pytest.mark.parametrize("method", ["ga", "szegedy"])
def test_noisy_images_stay_in_the_box(method: str) -> None:
    model = _tiny_cnn()
    images = (torch.rand(6, 1, 8, 8, generator=_gen(4)) > 0.5).float()  # pixels at 0 and 1
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    found = minimal_noise_search(
        model,
        images,
        labels,
        method=method,  # type: ignore[arg-type]
        generator=_gen(),
        ga=GeneticParams(population=8, generations=10),
        szegedy=SzegedyParams(steps=10, rounds=2, lr=0.5),
    )
    noisy = images.numpy() + found.noise
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert np.abs(found.noise).max() > 0.1


def test_same_generator_same_result_and_another_seed_differs() -> None:
    model = _tiny_cnn()
    images = torch.rand(4, 1, 8, 8, generator=_gen(4))
    labels = torch.tensor([0, 1, 2, 0])
    params = GeneticParams(population=10, generations=5)

    def run(seed: int) -> MinimalNoiseResult:
        return minimal_noise_search(
            model, images, labels, method="ga", generator=_gen(seed), ga=params
        )

    first, again, other = run(7), run(7), run(8)
    assert np.array_equal(first.noise, again.noise)
    assert np.array_equal(first.forward_passes, again.forward_passes)
    assert not np.array_equal(first.noise, other.noise)


def test_result_summary_and_round_trip() -> None:
    model = _tiny_cnn()
    images = torch.rand(5, 1, 8, 8, generator=_gen(4))
    labels = torch.tensor([0, 1, 2, 0, 1])
    found = minimal_noise_search(
        model,
        images,
        labels,
        method="szegedy",
        szegedy=SzegedyParams(steps=5, rounds=2),
    )
    assert found.params["steps"] == 5 and len(found) == 5
    expected_psnr = -10 * np.log10(np.square(found.noise).reshape(5, -1).mean(axis=1))
    np.testing.assert_allclose(found.psnr, expected_psnr, rtol=1e-4)
    np.testing.assert_allclose(found.norm, np.linalg.norm(found.noise.reshape(5, -1), axis=1))
    same = MinimalNoiseResult.from_arrays("szegedy", found.arrays(), found.params)
    assert same.summary() == pytest.approx(found.summary(), nan_ok=True)
    summary = found.summary()
    assert summary["images"] == 5 and summary["forward_passes_per_image"] == 1 + 2 * (5 + 1)
    assert summary["backward_passes_per_image"] == 10


class _Counting(nn.Module):
    """Counts the forward calls (and the images they carried) of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        out: torch.Tensor = self.inner(x)
        return out


@pytest.mark.parametrize("method", ["ga", "szegedy"])
def test_forward_passes_count_every_model_call_of_the_search(method: str) -> None:
    model = _Counting(_tiny_cnn())
    images = torch.rand(4, 1, 8, 8, generator=_gen(4))
    found = minimal_noise_search(
        model,
        images,
        torch.tensor([0, 1, 2, 0]),
        method=method,  # type: ignore[arg-type]
        generator=_gen(),
        ga=GeneticParams(population=6, generations=3),
        szegedy=SzegedyParams(steps=3, rounds=2),
    )
    # Outside the search: one single-image probe, then the clean and noisy measurements.
    assert model.batches[0] == 1 and model.batches[-2:] == [4, 4]
    images_seen = sum(model.batches[1:-2])
    assert int(found.forward_passes.sum()) == images_seen
    if method == "szegedy":
        assert (found.forward_passes == 1 + 2 * (3 + 1)).all()


def test_model_left_in_its_training_mode() -> None:
    model = _tiny_cnn().train()
    minimal_noise_search(
        model,
        torch.rand(2, 1, 8, 8),
        torch.tensor([0, 1]),
        method="szegedy",
        szegedy=SzegedyParams(steps=1, rounds=1),
    )
    assert model.training


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lam": -0.1}, "lam"),
        ({"beta": 0}, "beta"),
        ({"population": 4, "tournament": 5}, "tournament size"),
        ({"elite": 30}, "elite"),
        ({"patience": 0}, "patience"),
        ({"p_arithmetic": 0, "p_intermediate": 0, "p_uniform": 0}, "crossover"),
        ({"mutation_rate": 1.5}, "mutation_rate"),
        ({"scores": "probits"}, "scores"),
    ],
)
def test_bad_genetic_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        GeneticParams(**params)  # type: ignore[arg-type]


def test_bad_szegedy_parameters_and_unknown_keys() -> None:
    with pytest.raises(InvalidParameterError, match="lam"):
        SzegedyParams(lam=0)
    with pytest.raises(InvalidParameterError, match="target"):
        SzegedyParams(target="other")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"unknown GeneticParams.*'popsize'"):
        make_params(GeneticParams, {"popsize": 10})
    assert make_params(SzegedyParams, {"steps": 3}).steps == 3


def test_bad_search_input() -> None:
    model = _tiny_cnn()
    images, labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with pytest.raises(InvalidParameterError, match=r"labels must lie in \[0, 2\]"):
        minimal_noise_search(model, images, torch.tensor([0, 1, 3]), generator=_gen())
    with pytest.raises(InvalidParameterError, match="labels must be an integer"):
        minimal_noise_search(model, images, torch.zeros(3), generator=_gen())
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        minimal_noise_search(model, images * 3, labels, generator=_gen())
    with pytest.raises(InvalidParameterError, match="generator"):
        minimal_noise_search(model, images, labels, method="ga")
    with pytest.raises(InvalidParameterError, match="unknown method"):
        minimal_noise_search(model, images, labels, method="lbfgs")  # type: ignore[arg-type]


def test_empty_batch_and_non_tensor_labels_are_clear_errors() -> None:
    model = _tiny_cnn()
    images = torch.rand(3, 1, 8, 8)
    with pytest.raises(InvalidParameterError, match=r"at least one image.*empty batch"):
        minimal_noise_search(model, images[:0], torch.zeros(0, dtype=torch.long), method="szegedy")
    for labels in ([0, 1, 2], np.array([0, 1, 2]), None):
        with pytest.raises(InvalidParameterError, match=r"integer tensor.*torch\.as_tensor"):
            minimal_noise_search(model, images, labels, method="szegedy")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="labels must be an integer"):
        minimal_noise_search(model, images, torch.ones(3, dtype=torch.bool), method="szegedy")
    with pytest.raises(InvalidParameterError, match=r"shape \(3,\)"):
        minimal_noise_search(model, images, torch.zeros(3, 1, dtype=torch.long), generator=_gen())


class _Squeezed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(dim=1)  # (N,) instead of (N, K)


class _TupleOutput(nn.Module):
    """Returns ``(logits, features)``, as many published models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny_cnn()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), x.flatten(1)


@pytest.mark.parametrize("method", ["ga", "szegedy"])
def test_a_model_returning_a_tuple_is_a_model_error(method: str) -> None:
    images, labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with pytest.raises(ModelError, match=r"returned a tuple, not a tensor.*only the logits"):
        minimal_noise_search(
            _TupleOutput(),
            images,
            labels,
            method=method,  # type: ignore[arg-type]
            generator=_gen(),
        )


def test_wrong_model_output_shape() -> None:
    images, labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with pytest.raises(ModelError, match="logits"):
        minimal_noise_search(_Squeezed(), images, labels, generator=_gen())
    with pytest.raises(ModelError, match=r"\(1, 5\)"):
        minimal_noise_search(_tiny_cnn(), images, labels, generator=_gen(), num_classes=5)


def test_study_section_is_validated() -> None:
    base = {
        "name": "demo",
        "dataset": {"name": "mnist-sample"},
        "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    }
    config = parse_config({**base, "minimal_noise": {"images": 5, "ga": {"generations": 3}}})
    assert config.minimal_noise is not None and config.minimal_noise.methods == ["ga", "szegedy"]
    with pytest.raises(ConfigError, match="population"):
        parse_config({**base, "minimal_noise": {"ga": {"population": 3}}})
    with pytest.raises(ConfigError, match="unknown SzegedyParams"):
        parse_config({**base, "minimal_noise": {"szegedy": {"step": 3}}})
    with pytest.raises(ConfigError, match="methods"):
        parse_config({**base, "minimal_noise": {"methods": ["ga", "ga"]}})
