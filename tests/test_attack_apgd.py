from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack.adaptive import EOT
from robustlab.attack.apgd import (
    APGD,
    APGDRun,
    apgd_checkpoints,
    apgd_run,
    dlr_loss,
    dlr_targeted_loss,
)
from robustlab.attack.base import (
    ATTACKS,
    LossFunction,
    attack_mode,
    create_attack,
    cross_entropy_loss,
    loss_gradient,
)
from robustlab.attack.gradient import PGD
from robustlab.errors import InvalidParameterError
from robustlab.models import create_model
from robustlab.seeding import make_generator

# --- helpers -------------------------------------------------------------------------------


def _mlp(seed: int = 0, classes: int = 5, side: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(side * side, 16), nn.Tanh(), nn.Linear(16, classes)
    )


def _batch(
    n: int = 8, side: int = 6, classes: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, generator=g), torch.randint(0, classes, (n,), generator=g)


class Scripted(nn.Module):
    """A stand-in model whose loss follows a script, whatever the input.

    Call ``t`` of ``loss_gradient`` returns the gradient +1 everywhere and the logits
    ``[0, s_t, -1]``; for label 0 and ``-1 < s_t < 0`` the DLR loss is ``-(0 - s_t) / (0 + 1)
    = s_t`` and the sample is never misclassified. Records the iterate of every call.
    """

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        assert all(-1 < s < 0 for s in scores)
        self.scores = scores
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 3)

    def loss_gradient(
        self, x: torch.Tensor, y: torch.Tensor, loss: LossFunction | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.zeros(len(x), 3)
        logits[:, 1] = self.scores[len(self.inputs)]
        logits[:, 2] = -1.0
        self.inputs.append(x.clone())
        return torch.ones_like(x), logits


def _scripted_run(
    scores: list[float], steps: int, eps: float = 0.1, n: int = 2
) -> tuple[Scripted, torch.Tensor, APGDRun]:
    model = Scripted(scores)
    x = torch.full((n, 1, 3, 3), 0.5)
    run = apgd_run(
        model, x, torch.zeros(n, dtype=torch.long), eps=eps, norm="linf", steps=steps,
        loss=dlr_loss, random_start=False,
    )  # fmt: skip
    assert run.losses[:, 0].tolist() == pytest.approx(scores[: steps + 1], abs=1e-6)
    return model, x, run


def _paper_halvings(f: list[float], steps: int, rho: float = 0.75) -> list[int]:
    """Where the paper halves the step size for one sample with losses f(x(0)), ..., f(x(N)).

    An independent transcription of Algorithm 1's conditions, written from the paper: the
    checkpoints by the recurrence in exact hundredths, then condition 1 (fewer than
    rho * (w_j - w_{j-1}) rising steps) or condition 2 (eta unchanged at w_{j-1}, f_max unchanged
    since w_{j-1}). The losses do not depend on the iterate here, so the restarts at x_max
    do not change them.
    """
    p = [0, 22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 3, 6)
        if nxt > 100:
            break
        p.append(nxt)
    w = sorted({math.ceil(pj * steps / 100 - 1e-9) for pj in p})
    halved, halved_last = [], False
    for j in range(1, len(w)):
        if w[j] >= steps:
            break
        rises = sum(f[i + 1] > f[i] for i in range(w[j - 1], w[j]))
        unchanged = max(f[: w[j] + 1]) == max(f[: w[j - 1] + 1])
        halve = rises < rho * (w[j] - w[j - 1]) or (not halved_last and unchanged)
        if halve:
            halved.append(w[j])
        halved_last = halve
    return halved


def _halvings(step_sizes: torch.Tensor) -> list[int]:
    """The steps k whose step size is half the one before (one sample)."""
    s = step_sizes.tolist()
    for a, b in itertools.pairwise(s):
        assert b == a or b == a / 2
    return [k for k in range(1, len(s)) if s[k] == s[k - 1] / 2]


@functools.cache
def _train_mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny MLP on a synthetic 4-class task (noisy prototypes), and held-out test data."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(4, 1, 6, 6, generator=g)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=g)
        x = (prototypes[y] + 0.35 * torch.randn(n, 1, 6, 6, generator=g)).clamp(0, 1)
        return x, y

    x_train, y_train = sample(1024)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 4))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimiser.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        optimiser.step()
    x_test, y_test = sample(300)
    return model.eval(), x_test, y_test


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(dim=1) == y).float().mean())


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoints_are_the_papers() -> None:
    # p: 0, .22, .41 (.22 + .19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07), .93 (+.06),
    # .99 (+.06), then 1.05 > 1.
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # x10: 0, 2.2, 4.1, 5.7, 7.0, 8.0, 8.7, 9.3, 9.9 -> ceil 0, 3, 5, 6, 7, 8, 9, 10, 10.
    assert apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    # x50: 0, 11, 20.5, 28.5, 35, 40, 43.5, 46.5, 49.5.
    assert apgd_checkpoints(50) == [0, 11, 21, 29, 35, 40, 44, 47, 50]
    assert apgd_checkpoints(1) == [0, 1]
    # The same recurrence in floating point gets 57 wrong: p_3 = 0.5700000000000001.
    p = [0.0, 0.22]
    for _ in range(2):
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert math.ceil(p[3] * 100) == 58


# --- the step-size schedule ----------------------------------------------------------------


def test_rising_loss_never_halves_the_step() -> None:
    _, _, run = _scripted_run([-0.99 + 0.009 * t for t in range(101)], steps=100)
    assert run.step_sizes.shape == (100, 2)
    assert bool((run.step_sizes == 0.2).all())


def test_flat_loss_halves_at_every_checkpoint_and_restarts_from_x_max() -> None:
    model, x, run = _scripted_run([-0.5] * 101, steps=100)
    expected = [22, 41, 57, 70, 80, 87, 93, 99]
    assert _halvings(run.step_sizes[:, 0]) == expected == _paper_halvings([-0.5] * 101, 100)
    assert bool((run.step_sizes[:, 0] == run.step_sizes[:, 1]).all())
    assert run.step_sizes[-1, 0].item() == pytest.approx(0.2 / 2**8)
    # x(1) = P(0.5 + 0.2) = 0.6 and the momentum keeps it there; at checkpoint 22 the iterate
    # goes back to x_max = x(0) (no later loss is strictly higher), so with eta = 0.1:
    # x(23) = P(0.5 + 0.75 (0.6 - 0.5) + 0.25 (0.5 - x(21))) = 0.5 + 0.075 - 0.025 = 0.55.
    assert torch.allclose(model.inputs[1], torch.full_like(x, 0.6))
    assert torch.allclose(model.inputs[22], torch.full_like(x, 0.6))
    assert torch.allclose(model.inputs[23], torch.full_like(x, 0.55))
    # Never misclassified: the result is x_max, here the image itself.
    assert not run.fooled.any()
    assert torch.equal(run.adversarial, x)
    assert torch.equal(run.x_max, x)


def test_condition_two_halves_when_the_best_loss_stalls() -> None:
    # A high first loss, then a sawtooth below it that rises 7 steps in 8: condition 1 never
    # holds, the best loss never improves, so condition 2 halves at every other checkpoint,
    # starting at the first (eta was not halved at w_0 = 0).
    scores = [-0.01] + [-0.9 + 0.05 * ((t - 1) % 8) for t in range(1, 101)]
    _, _, run = _scripted_run(scores, steps=100)
    assert _halvings(run.step_sizes[:, 0]) == [22, 57, 80, 93] == _paper_halvings(scores, 100)


@pytest.mark.parametrize(("drops", "halved"), [(4, False), (5, True)])
def test_condition_one_is_a_strict_inequality(drops: int, halved: bool) -> None:
    # Between checkpoints 41 and 57 (16 steps), 16 - drops steps raise the loss; the loss
    # keeps reaching new highs, so only condition 1 can hold: 12 < 0.75 * 16 is false.
    f = [0.0]
    for i in range(100):
        down = 41 <= i < 57 and (i - 42) % 3 == 0 and (i - 42) // 3 < drops
        f.append(f[-1] - 0.5 if down else f[-1] + 1.0)
    assert sum(f[i + 1] > f[i] for i in range(41, 57)) == 16 - drops
    scores = [-0.99 + v / 200 for v in f]
    _, _, run = _scripted_run(scores, steps=100)
    found = _halvings(run.step_sizes[:, 0])
    assert found == _paper_halvings(scores, 100)
    assert found == ([57] if halved else [])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("steps", [100, 37])
def test_halvings_match_the_paper_on_random_loss_walks(seed: int, steps: int) -> None:
    g = torch.Generator().manual_seed(seed)
    up = torch.rand(steps, generator=g) < 0.8
    size = torch.rand(steps, generator=g)
    f = [-0.5]
    for k in range(steps):
        change = (0.1 + float(size[k])) / 400
        f.append(f[-1] + (change if up[k] else -change))
    _, _, run = _scripted_run(f, steps=steps)
    assert _halvings(run.step_sizes[:, 0]) == _paper_halvings(f, steps)


# --- DLR -----------------------------------------------------------------------------------


def test_dlr_losses_by_hand() -> None:
    z = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.5]] * 2)
    # Sorted: 4, 3, 2, 1, 0.5. Label 0: -(1 - 4) / (4 - 2); label 1 (the top): -(4 - 3) / 2.
    assert dlr_loss(z, torch.tensor([0, 1])).tolist() == pytest.approx([1.5, -0.5])
    # Targeted, label 1, targets 3 and 4: -(4 - 3) / (4 - (2 + 1) / 2), -(4 - 0.5) / 2.5.
    targeted = dlr_targeted_loss(z, torch.tensor([1, 1]), torch.tensor([3, 4]))
    assert targeted.tolist() == pytest.approx([-0.4, -1.4])
    # Invariant to shifting and rescaling the logits.
    y = torch.tensor([2, 4])
    assert torch.allclose(dlr_loss(3 * z - 7, y), dlr_loss(z, y))


def test_dlr_needs_enough_classes() -> None:
    with pytest.raises(InvalidParameterError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(InvalidParameterError, match="at least 4 classes"):
        dlr_targeted_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))
    x, y = _batch(4, classes=2)
    with pytest.raises(InvalidParameterError, match="at least 3 classes"):
        APGD(eps=0.1, steps=2, loss="dlr")(_mlp(classes=2), x, y, make_generator(0))
    x, y = _batch(4, classes=3)
    with pytest.raises(InvalidParameterError, match="at least 4 classes"):
        APGD(eps=0.1, steps=2, loss="dlr", targets=1)(_mlp(classes=3), x, y, make_generator(0))


# --- the attack ----------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("conv", [False, True])
def test_stays_in_the_ball_and_the_box(norm: str, conv: bool) -> None:
    if conv:
        torch.manual_seed(1)
        model, (x, y) = create_model("lin2022_cnn").eval(), _batch(4, side=28, classes=10)
    else:
        model, (x, y) = _mlp(), _batch(8)
    eps = 0.1 if norm == "linf" else 1.0
    for loss in ("ce", "dlr"):
        result = APGD(eps=eps, norm=norm, steps=12, loss=loss).run(model, x, y, make_generator(0))
        adv = result.adversarial
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
        assert bool((size <= eps + 1e-5).all())
        assert bool((adv >= 0).all()) and bool((adv <= 1).all())
        assert adv.shape == x.shape and adv.is_contiguous()
        assert not result.zero_gradient.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_the_references(norm: str) -> None:
    model = Scripted([-0.5] * 3)
    x = torch.full((3, 1, 5, 5), 0.5)
    apgd_run(
        model, x, torch.zeros(3, dtype=torch.long), eps=0.1, norm=norm, steps=2,
        loss=dlr_loss, random_start=True, generator=make_generator(0),
    )  # fmt: skip
    delta = (model.inputs[0] - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    # L-inf: eps * t / ||t||_inf touches a face of the cube; L2: on the sphere.
    assert size.tolist() == pytest.approx([0.1] * 3, abs=1e-6)
    assert len(set(delta[0].tolist())) > 10


def test_fooled_samples_get_a_misclassified_iterate() -> None:
    model, x, y = _train_mlp()
    with attack_mode(model):
        run = apgd_run(
            model, x, y, eps=0.25, norm="linf", steps=10, loss=dlr_loss,
            generator=make_generator(0),
        )  # fmt: skip
    with torch.no_grad():
        wrong = model(run.adversarial).argmax(dim=1) != y
        loss_max = dlr_loss(model(run.x_max), y)
    assert 0 < int(run.fooled.sum()) < len(y)
    assert torch.equal(wrong, run.fooled)
    assert torch.allclose(loss_max, run.loss_max, atol=1e-5)
    assert torch.equal(run.adversarial[~run.fooled], run.x_max[~run.fooled])


def test_apgd_ce_at_least_as_strong_as_pgd_and_reproducible() -> None:
    model, x, y = _train_mlp()
    clean = _accuracy(model, x, y)
    assert clean > 0.9
    eps, steps = 0.12, 20
    pgd = PGD(eps=eps, steps=steps)(model, x, y, make_generator(0))
    apgd = APGD(eps=eps, steps=steps)
    first = apgd(model, x, y, make_generator(0))
    pgd_acc, apgd_acc = _accuracy(model, pgd, y), _accuracy(model, first, y)
    assert 0.2 < pgd_acc < clean
    assert apgd_acc <= pgd_acc
    # Its best loss is also higher on average than PGD's last iterate's.
    with attack_mode(model):
        run = apgd_run(
            model, x, y, eps=eps, norm="linf", steps=steps, loss=cross_entropy_loss,
            generator=make_generator(0),
        )  # fmt: skip
    with torch.no_grad():
        pgd_loss = F.cross_entropy(model(pgd), y, reduction="none")
    assert run.loss_max.mean() > pgd_loss.mean()
    assert torch.equal(apgd(model, x, y, make_generator(0)), first)
    assert not torch.equal(apgd(model, x, y, make_generator(1)), first)
    # APGD-T (3 targets) is at least as strong as the untargeted DLR attack it extends.
    dlr = _accuracy(
        model, APGD(eps=eps, steps=steps, loss="dlr")(model, x, y, make_generator(0)), y
    )
    targeted = APGD(eps=eps, steps=steps, loss="dlr", targets=3)
    assert _accuracy(model, targeted(model, x, y, make_generator(0)), y) <= dlr


class Recorder(nn.Module):
    """Delegates to ``inner`` and records every gradient call's iterate and loss."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[torch.Tensor, LossFunction | None]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)  # type: ignore[no-any-return]

    def loss_gradient(
        self, x: torch.Tensor, y: torch.Tensor, loss: LossFunction | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append((x.clone(), loss))
        return loss_gradient(self.inner, x, y, loss)


def test_targets_are_the_most_likely_other_classes_and_runs_skip_fooled_samples() -> None:
    model, x, y = _train_mlp()
    x, y = x[:60], y[:60]
    recorder = Recorder(model)
    attack = APGD(eps=0.12, steps=5, loss="dlr", targets=3, random_start=False)
    adv = attack(recorder, x, y)
    with torch.no_grad():
        logits = model(x)
    # The other classes by clean logit, most likely first (the true class sorted last).
    others = logits.scatter(1, y[:, None], -math.inf).argsort(dim=1, descending=True)
    assert bool((others[:, -1] == y).all())
    starts = recorder.calls[::6]  # 6 gradient passes a run; without a random start x(0) = x
    assert len(recorder.calls) == 6 * len(starts) == 18
    previous = torch.arange(len(x))
    for rank, (start, loss) in enumerate(starts):
        standing = (start[:, None] == x[None]).flatten(2).all(dim=2).float().argmax(dim=1)
        assert torch.equal(start, x[standing])
        assert set(standing.tolist()) <= set(previous.tolist())
        assert isinstance(loss, functools.partial) and loss.func is dlr_targeted_loss
        assert torch.equal(loss.keywords["target"], others[standing, rank])
        previous = standing
    assert len(starts[0][0]) == len(x) > len(starts[1][0]) > len(starts[2][0])
    # Samples out of a later run were fooled by an earlier one, and keep that example.
    fooled = torch.ones(len(x), dtype=torch.bool)
    fooled[previous] = False
    with torch.no_grad():
        assert bool((model(adv[fooled]).argmax(dim=1) != y[fooled]).all())


def test_restarts_attack_only_standing_samples() -> None:
    model, x, y = _train_mlp()
    recorder = Recorder(model)
    attack = APGD(eps=0.12, steps=4, restarts=3)
    result = attack(recorder, x, y, make_generator(0))
    sizes = [len(iterate) for iterate, _ in recorder.calls]
    assert sizes[:5] == [len(x)] * 5 and len(sizes) == 15
    survivors = sizes[5]
    assert 0 < survivors < len(x)
    assert sizes[5:10] == [survivors] * 5
    assert _accuracy(model, result, y) <= survivors / len(x) + 1e-6
    single = APGD(eps=0.12, steps=4)(model, x, y, make_generator(0))
    assert _accuracy(model, result, y) <= _accuracy(model, single, y)


class Noisy(nn.Module):
    """A random defence: Gaussian input noise from its own generator, then the classifier."""

    random = True

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator) * 0.05
        return self.classifier(x + noise)  # type: ignore[no-any-return]


class SpyEOT(EOT):
    def __init__(self, pipeline: nn.Module, samples: int) -> None:
        super().__init__(pipeline, samples)
        self.losses: list[LossFunction | None] = []

    def loss_gradient(
        self, x: torch.Tensor, y: torch.Tensor, loss: LossFunction | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.losses.append(loss)
        return super().loss_gradient(x, y, loss)


def test_through_eot_the_estimator_gets_the_dlr_loss() -> None:
    model, (x, y) = _mlp(), _batch(6)
    eot = SpyEOT(Noisy(model), samples=3)
    adv = APGD(eps=0.1, steps=5, loss="dlr")(eot, x, y, make_generator(0))
    assert len(eot.losses) == 6 and all(loss is dlr_loss for loss in eot.losses)
    assert bool(((adv - x).abs() <= 0.1 + 1e-6).all())
    eot.losses.clear()
    APGD(eps=0.1, steps=3, loss="dlr", targets=1)(eot, x, y, make_generator(0))
    assert eot.losses and all(
        isinstance(loss, functools.partial) and loss.func is dlr_targeted_loss
        for loss in eot.losses
    )


def test_create_from_spec() -> None:
    attack = create_attack("apgd:eps=0.1,loss=dlr,targets=3")
    assert isinstance(attack, APGD) and "apgd" in ATTACKS
    assert (attack.eps, attack.loss, attack.targets, attack.steps) == (0.1, "dlr", 3, 100)
    assert attack.random and not APGD(random_start=False).random and not APGD(eps=0).random
    attack = create_attack("apgd:eps=0.1,loss=dlr,targets=3,steps=3,norm=l2")
    x, y = _batch(4)
    adv = attack(_mlp(), x, y, make_generator(0))
    assert bool(((adv - x).flatten(1).norm(dim=1) <= 0.1 + 1e-6).all())


def test_zero_budget_and_zero_gradients() -> None:
    x, y = _batch(4)
    result = APGD(eps=0.0, steps=3).run(_mlp(), x, y, make_generator(0))
    assert torch.equal(result.adversarial, x) and not result.zero_gradient.any()
    dead = _mlp()
    with torch.no_grad():
        dead[1].weight.zero_()
    result = APGD(eps=0.1, steps=3, loss="dlr").run(dead, x, y, make_generator(0))
    assert bool(result.zero_gradient.all()) and bool(result.vanishing_gradient.all())


@pytest.mark.parametrize(
    "params",
    [
        {"eps": -0.1},
        {"eps": float("nan")},
        {"norm": "l1"},
        {"steps": 0},
        {"steps": 2.5},
        {"loss": "cw"},
        {"targets": -1},
        {"targets": 1},  # APGD-T attacks the targeted DLR loss: loss=ce is refused
        {"restarts": 0},
        {"restarts": 2, "random_start": False},
        {"rho": 1.5},
        {"rho": -0.1},
        {"momentum": 2},
        {"momentum": True},
    ],
)
def test_bad_parameters(params: dict[str, object]) -> None:
    with pytest.raises(InvalidParameterError):
        APGD(**params)  # type: ignore[arg-type]


def test_missing_generator() -> None:
    x, y = _batch(2)
    with pytest.raises(InvalidParameterError, match="Generator"):
        APGD(eps=0.1, steps=2)(_mlp(), x, y)
    # Without a random start (and one target or restart) nothing is drawn.
    adv = APGD(eps=0.1, steps=2, random_start=False)(_mlp(), x, y)
    assert adv.shape == x.shape
