"""Training throughput of every training strategy against a hand-written PyTorch loop.

For every registered strategy (``robustlab.train.strategy.STRATEGIES``) this trains one epoch
of the real loop, ``robustlab.train.loop.train_epochs``, on a model from ``build_model`` with
the optimizer of ``make_optimizer`` and the recipe's strategy, and one epoch of a plain PyTorch
loop written out by hand that does exactly the same work: the same model and initial weights,
the same optimizer (Adam, learning rate 1e-4, lin2022's recipe), the same batches (a seeded
shuffle, uint8 -> float32 / 255), the same forward and backward passes and the same
perturbation maths written directly in torch:

- ``standard``: cross-entropy of the clean batch;
- ``constant``: every image plus clipped Gaussian noise of variance drawn per image from
  ``[0.001, 0.05]`` (cavey), then cross-entropy;
- ``incremental``: the same noise on a random 52.5 % of each batch (the middle epoch of a
  3-epoch linear schedule from 5 % to 100 %: each image perturbed with that probability);
- ``augment``: the batch and ``--copies`` noisy copies of it (aghdam2016's sigma on the 0-255
  scale, one copy per level) concatenated into one forward pass;
- ``stability``: ``CE(f(x)) + 0.01 * KL(p(x) || p(x'))`` with ``x' = clip(x + 0.04 * N)``,
  clean and noisy copy in one forward pass;
- ``transfer``: a new head (fc 256 + ReLU + fc 10) in place of the parent's output layer,
  only the head trained (the rest frozen and in eval mode), every image noisy as ``constant``;
- ``finetune``: only the parent's last ``nn.Linear`` trained (the rest frozen, eval mode), on
  the clean batch and a copy with Gaussian noise of sigma drawn per image from ``[0.05, 0.3]``;
- ``adversarial``: PGD adversarial training (Madry et al.) against the textbook PGD-AT loop:
  model in eval mode, a random start in the L-inf ball, ``--pgd-steps`` sign steps of
  ``2.5 * eps / steps`` on the input gradient (``torch.autograd.grad``), projection onto the
  ball and ``[0, 1]``, then cross-entropy of the adversarial batch in training mode.

The parent of ``transfer`` and ``finetune`` is the architecture at its seeded initialisation
(training it first would not change the cost). A strategy registered later without a plain
loop here is timed alone (with its default parameters, if it has them).

Two throughputs are given: *clean* images per second (images of the training split per
second, the rate at which an epoch goes by) and *trained* images per second (the images the
model was trained on: clean images and the copies a strategy adds; PGD's attack passes are not
counted). The ratio is robustlab / plain on the same work, so > 1 means robustlab is faster.

After a warm-up (one pass over ``--warmup`` images each), robustlab and plain run ``--repeats``
times each, interleaved (alternating which goes first), each run one epoch over ``--images``
training images; the table shows medians and the spread (max / min) of the repeats. The data
are the real MNIST digits (``$ROBUSTLAB_DATA`` or ``../shared/datasets``), else the embedded
``mnist-sample``. As the ``robustlab`` command does, the glibc allocator is tuned first
(:func:`robustlab.device.tune_cpu_allocator`, process-wide: both loops benefit). The load
average is printed: on a shared machine the numbers are noisy; rerun when it is low, or use
``--threads 1`` (two threads on two busy cores wait for each other). About 4 minutes at one
thread on a loaded 2-core machine (load 12), 12 minutes at two (see benchmarks/README.md).

Run:
    python benchmarks/bench_strategies.py [--only adversarial constant] [--images 1000]
        [--batch 100] [--repeats 3] [--threads 2] [--pgd-steps 7] [--copies 4] [--json PATH]
        [--profile STRATEGY]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.base import Split
from robustlab.data.datasets import load_dataset
from robustlab.device import tune_cpu_allocator
from robustlab.models import create_model
from robustlab.train.loop import TrainingRecipe, build_model, make_optimizer, train_epochs
from robustlab.train.strategy import STRATEGIES, create_strategy, load_builtin_strategies

REPO = Path(__file__).resolve().parents[1]
NOISE_VARIANCE = (0.001, 0.05)  # constant / incremental / transfer: cavey's variance range
FINETUNE_SIGMA = (0.05, 0.3)
INCREMENTAL = (0.05, 1.0, 3, 1)  # start share, end share, total epochs, the epoch timed
LEARNING_RATE = 1e-4  # lin2022's Adam learning rate, the recipe default

# (model, x, y, generator) -> (loss, images trained on)
PlainLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[Any, int]]


# ---------------------------------------------------------------- the plain, hand-written side


def noise_variance_per_image(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Clipped Gaussian noise, variance uniform in NOISE_VARIANCE, one draw per image."""
    low, high = NOISE_VARIANCE
    var = low + (high - low) * torch.rand(len(x), generator=g, device=x.device, dtype=torch.float64)
    std = var.sqrt().to(x.dtype).view(-1, 1, 1, 1)
    return (x + std * torch.randn(x.shape, generator=g, device=x.device)).clamp(0, 1)


def plain_standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    return F.cross_entropy(model(x), y), len(y)


def plain_constant(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    return F.cross_entropy(model(noise_variance_per_image(x, g)), y), len(y)


def plain_incremental(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator
) -> Any:
    start, end, total, epoch = INCREMENTAL
    share = start + (end - start) * epoch / (total - 1)
    chosen = (torch.rand(len(x), generator=g, device=x.device) < share).nonzero().flatten()
    mixed = x.clone()
    mixed[chosen] = noise_variance_per_image(x[chosen], g)
    return F.cross_entropy(model(mixed), y), len(y)


def plain_augment(sigmas_255: list[float]) -> PlainLoss:
    sigmas = torch.tensor(sigmas_255) / 255.0

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
        k = len(sigmas)
        std = sigmas.to(x.device).repeat_interleave(len(x)).view(-1, 1, 1, 1)
        stacked = x.repeat(k, 1, 1, 1)
        noisy = (stacked + std * torch.randn(stacked.shape, generator=g, device=x.device)).clamp(
            0, 1
        )
        return F.cross_entropy(model(torch.cat([x, noisy])), y.repeat(k + 1)), (k + 1) * len(y)

    return loss


def plain_stability(alpha: float, sigma: float) -> PlainLoss:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
        noisy = (x + sigma * torch.randn(x.shape, generator=g, device=x.device)).clamp(0, 1)
        clean_logits, noisy_logits = model(torch.cat([x, noisy])).chunk(2)
        log_p = F.log_softmax(clean_logits, dim=1)
        log_q = F.log_softmax(noisy_logits, dim=1)
        kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        return F.cross_entropy(clean_logits, y) + alpha * kl, 2 * len(y)

    return loss


def plain_finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    low, high = FINETUNE_SIGMA
    sigma = low + (high - low) * torch.rand(len(x), generator=g, device=x.device)
    noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g, device=x.device)
    batch = torch.cat([x, noisy.clamp(0, 1)])
    return F.cross_entropy(model(batch), torch.cat([y, y])), 2 * len(y)


def plain_pgd_at(eps: float, steps: int) -> PlainLoss:
    """The textbook PGD-AT step: eval-mode PGD from a random start, then CE in train mode."""
    alpha = 2.5 * eps / steps

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
        model.eval()
        start = torch.empty(x.shape, device=x.device).uniform_(-eps, eps, generator=g)
        adv = (x + start).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            attack_loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(attack_loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        model.train()
        return F.cross_entropy(model(adv.detach()), y), len(y)

    return loss


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def new_head(model: nn.Module) -> nn.Module:
    """transfer by hand: the last Linear becomes Linear(in, 256) + ReLU + Linear(256, out)."""
    name, old = last_linear(model)
    owner, _, attribute = name.rpartition(".")
    head = nn.Sequential(
        nn.Linear(old.in_features, 256), nn.ReLU(), nn.Linear(256, old.out_features)
    )
    setattr(model.get_submodule(owner) if owner else model, attribute, head)
    return head


@dataclass
class Plain:
    """A hand-written training loop: its model, optimizer and per-batch loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: PlainLoss
    mode: Callable[[], None]
    generator: torch.Generator

    def epoch(self, split: Split, batch_size: int, device: torch.device) -> int:
        """One epoch over ``split``; returns the number of images trained on."""
        self.mode()
        order = torch.randperm(len(split), generator=self.generator)
        trained = 0
        for start in range(0, len(split), batch_size):
            index = order[start : start + batch_size]
            x = split.images[index].to(device).float().div_(255.0)
            y = split.labels[index].to(device)
            loss, images = self.loss(self.model, x, y, self.generator)
            trained += images
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.model.eval()
        return trained


def plain_for(
    name: str, robust_model: nn.Module, parent: nn.Module | None, args: argparse.Namespace
) -> Plain | None:
    """The hand-written counterpart of strategy ``name``, from the same initial weights."""
    device = next(robust_model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(1)
    losses: dict[str, PlainLoss] = {
        "standard": plain_standard,
        "constant": plain_constant,
        "incremental": plain_incremental,
        "augment": plain_augment(augment_sigmas(args.copies)),
        "stability": plain_stability(0.01, 0.04),
        "adversarial": plain_pgd_at(args.eps, args.pgd_steps),
        "transfer": plain_constant,
        "finetune": plain_finetune,
    }
    if name not in losses:
        return None
    if name in ("transfer", "finetune"):
        assert parent is not None
        model = copy.deepcopy(parent)
        head = new_head(model) if name == "transfer" else last_linear(model)[1]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        trained = list(head.parameters())

        def mode() -> None:
            model.eval()
            head.train()
    else:
        model = create_model(args.arch)
        trained = list(model.parameters())

        def mode() -> None:
            model.train()

    # Same initial weights as robustlab's model; this also checks the structures match.
    model.load_state_dict(robust_model.state_dict())
    model.to(device)
    optimizer = torch.optim.Adam(trained, lr=LEARNING_RATE)
    return Plain(model, optimizer, losses[name], mode, generator)


# ------------------------------------------------------------------------- the robustlab side


def augment_sigmas(copies: int) -> list[float]:
    """``copies`` sigmas (0-255 scale) evenly over aghdam2016's range 1..40."""
    if copies == 1:
        return [20.0]
    return [round(1 + 39 * i / (copies - 1), 3) for i in range(copies)]


def strategy_params(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The strategy parameters benchmarked (None: the strategy's defaults)."""
    variance = {
        "degradation": "gaussian_noise_variance",
        "levels": {"low": NOISE_VARIANCE[0], "high": NOISE_VARIANCE[1]},
    }
    params: dict[str, dict[str, Any]] = {
        "standard": {},
        "constant": {"perturbation": variance},
        "incremental": {
            "perturbation": variance,
            "start": INCREMENTAL[0],
            "end": INCREMENTAL[1],
            "schedule": "linear",
        },
        "augment": {
            "perturbation": {
                "degradation": "gaussian_noise_255",
                "levels": augment_sigmas(args.copies),
            }
        },
        "stability": {"alpha": 0.01, "sigma": 0.04},
        "transfer": {"hidden": [256], "train": "head", "perturbation": variance},
        "finetune": {
            "perturbation": {
                "degradation": "gaussian_noise",
                "levels": {"low": FINETUNE_SIGMA[0], "high": FINETUNE_SIGMA[1]},
            },
            "layers": 1,
        },
        "adversarial": {"attack": f"pgd:eps={args.eps},steps={args.pgd_steps}", "share": 1.0},
    }
    return params.get(name)


@dataclass
class Robust:
    """robustlab's loop: recipe, model, optimizer and strategy as the model cache builds them."""

    recipe: TrainingRecipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    strategy: Any
    epoch_index: int
    parent: nn.Module | None

    def epoch(self, split: Split, batch_size: int, device: torch.device) -> int:
        return train_epochs(
            self.model,
            self.optimizer,
            split,
            self.recipe,
            start_epoch=self.epoch_index,
            end_epoch=self.epoch_index + 1,
            num_classes=10,
            strategy=self.strategy,
        )


def robust_for(name: str, params: dict[str, Any], args: argparse.Namespace) -> Robust:
    epochs, epoch_index = (INCREMENTAL[2], INCREMENTAL[3]) if name == "incremental" else (1, 0)
    recipe = TrainingRecipe(
        architecture=args.arch,
        dataset="bench",
        epochs=epochs,
        batch_size=args.batch,
        learning_rate=LEARNING_RATE,
        strategy=name,
        strategy_params=params,
    )
    strategy = recipe.build_strategy()
    parent = None
    if strategy.parent_role is not None:
        parent = build_model(TrainingRecipe(architecture=args.arch, dataset="bench", epochs=1))
    model = build_model(recipe, start=parent).to(args.device)
    optimizer = make_optimizer(recipe, model, strategy)
    return Robust(recipe, model, optimizer, strategy, epoch_index, parent)


# ------------------------------------------------------------------------------- measurement


@dataclass
class Result:
    name: str
    clean: int
    trained: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    load: str = ""
    note: str = ""

    def median(self, who: str) -> float:
        return statistics.median(self.seconds[who])

    def spread(self, who: str) -> float:
        return max(self.seconds[who]) / min(self.seconds[who])

    def ratio(self) -> float | None:
        if "plain" not in self.seconds:
            return None
        return self.median("plain") / self.median("robustlab")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def timed(run: Callable[[], int], device: torch.device) -> tuple[float, int]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    images = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, images


def measure(name: str, split: Split, warm: Split, args: argparse.Namespace) -> Result | None:
    params = strategy_params(name, args)
    note = ""
    if params is None:  # registered after this script was written: defaults, robustlab only
        try:
            create_strategy(name)
        except Exception as err:
            print(f"{name}: skipped, no plain loop and no default parameters ({err})")
            return None
        params, note = {}, "no plain loop written for it: robustlab alone, default parameters"
    robust = robust_for(name, params, args)
    plain = plain_for(name, robust.model, robust.parent, args)
    runs: dict[str, Robust | Plain] = {"robustlab": robust}
    if plain is not None:
        runs["plain"] = plain
    result = Result(name, len(split), load=load(), note=note)
    device = torch.device(args.device)
    for who, loop in runs.items():  # warm-up
        loop.epoch(warm, args.batch, device)
        result.seconds[who] = []
    for repeat in range(args.repeats):
        order = list(runs.items())
        for who, loop in order if repeat % 2 == 0 else order[::-1]:
            seconds, images = timed(partial(loop.epoch, split, args.batch, device), device)
            result.seconds[who].append(seconds)
            result.trained[who] = images
    if plain is not None and result.trained["robustlab"] != result.trained["plain"]:
        sys.exit(
            f"{name}: robustlab trained on {result.trained['robustlab']} images, the plain "
            f"loop on {result.trained['plain']}: the two loops do not do the same work"
        )
    return result


def verdict(result: Result, noisy: float) -> str:
    ratio = result.ratio()
    if ratio is None:
        return f"{result.name}: no plain loop to compare with ({result.note})"
    worst = max(result.spread(w) for w in result.seconds)
    caveat = (
        f" (spread {worst:.2f}: noisy; rerun when quieter, or --threads 1)" if worst > noisy else ""
    )
    if ratio >= 1.05:
        text = "faster than the plain loop"
    elif ratio >= 0.95:
        text = "on par with the plain loop"
    elif ratio >= 0.8:
        text = "slower than the plain loop, within 20 %"
    else:
        text = "MUCH SLOWER than the plain loop (< 0.8x): profile it (--profile)"
    return f"{result.name:<12} {ratio:.2f}x  {text}{caveat}"


def profile(name: str, split: Split, args: argparse.Namespace) -> None:
    """cProfile of one robustlab epoch of ``name`` and of its plain loop, top functions."""
    params = strategy_params(name, args) or {}
    robust = robust_for(name, params, args)
    plain = plain_for(name, robust.model, robust.parent, args)
    device = torch.device(args.device)
    loops: dict[str, Robust | Plain | None] = {"robustlab": robust, "plain": plain}
    for who, loop in loops.items():
        if loop is None:
            continue
        loop.epoch(split.subset(min(len(split), 5 * args.batch)), args.batch, device)
        profiler = cProfile.Profile()
        profiler.enable()
        loop.epoch(split, args.batch, device)
        profiler.disable()
        print(f"\n=== cProfile of one {who} epoch of {name} (top 25 by cumulative time)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def dataset_split(args: argparse.Namespace) -> tuple[Split, str]:
    data_dir = (
        args.data_dir
        or os.environ.get("ROBUSTLAB_DATA")
        or str(REPO.parent / "shared" / "datasets")
    )
    try:
        data = load_dataset("mnist", data_dir=data_dir, download=False)
        source = f"mnist ({data_dir})"
    except Exception as err:
        print(f"MNIST not found in {data_dir} ({err}); using mnist-sample", file=sys.stderr)
        data, source = load_dataset("mnist-sample"), "mnist-sample (embedded)"
    split = data.train.subset(args.images)
    assert isinstance(split, Split)
    return split, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="strategies to run (default all)")
    parser.add_argument("--arch", default="lin2022_cnn")
    parser.add_argument("--images", type=int, default=1000, help="training images per epoch")
    parser.add_argument("--warmup", type=int, default=300, help="images of the warm-up pass")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--pgd-steps", type=int, default=7, help="PGD steps of adversarial")
    parser.add_argument("--eps", type=float, default=0.3, help="PGD L-inf radius")
    parser.add_argument("--copies", type=int, default=4, help="noisy copies of augment")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--noisy", type=float, default=1.3, help="spread that flags noise")
    parser.add_argument("--no-tune-allocator", action="store_true")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="STRATEGY",
        help="instead of the table, cProfile one epoch of STRATEGY each way",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    load_builtin_strategies()
    names = args.only or STRATEGIES.names()
    unknown = sorted(set(names) - set(STRATEGIES.names()))
    if unknown:
        sys.exit(f"unknown strategies {unknown}; registered: {STRATEGIES.names()}")
    split, source = dataset_split(args)
    if args.profile:
        profile(args.profile, split, args)
        return
    warm = split.subset(args.warmup)
    assert isinstance(warm, Split)

    print(
        f"torch {torch.__version__} | python {platform.python_version()} | device {args.device} "
        f"| threads {torch.get_num_threads()} | cpus {os.cpu_count()} | allocator tuned {tuned}"
    )
    print(
        f"{args.arch}, Adam lr {LEARNING_RATE:g}, batch {args.batch}, {len(split):,} training "
        f"images of {source}, one epoch per run, median of {args.repeats} after a warm-up of "
        f"{args.warmup}; PGD-AT: eps {args.eps}, {args.pgd_steps} steps; augment: "
        f"{args.copies} copies"
    )
    load_before = load()
    print(f"load average before: {load_before}")
    results: list[Result] = []
    for name in names:
        result = measure(name, split, warm, args)
        if result is not None:
            results.append(result)
            ratio = result.ratio()
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            print(f"  {name:<12} done, ratio {shown} (load {result.load})", flush=True)
    load_after = load()

    head = (
        f"{'strategy':<12}{'x imgs':>7}{'robustlab':>11}{'trained/s':>11}{'plain':>10}"
        f"{'trained/s':>11}{'ratio':>7}{'spread r/p':>12}"
    )
    print(f"\n{'':<19}{'--- img/s, clean / trained ---':^54}")
    print(head)
    print("-" * len(head))
    for r in results:
        rs = r.median("robustlab")
        factor = r.trained["robustlab"] / r.clean
        row = (
            f"{r.name:<12}{factor:>6.0f}x{r.clean / rs:>11.0f}{r.trained['robustlab'] / rs:>11.0f}"
        )
        if "plain" in r.seconds:
            ps = r.median("plain")
            ratio = r.ratio()
            assert ratio is not None
            row += (
                f"{r.clean / ps:>10.0f}{r.trained['plain'] / ps:>11.0f}{ratio:>6.2f}x"
                f"{r.spread('robustlab'):>6.2f}/{r.spread('plain'):.2f}"
            )
        else:
            row += f"{'-':>10}{'-':>11}{'-':>7}{r.spread('robustlab'):>6.2f}/-"
        print(row)
    print("-" * len(head))
    print("verdicts (ratio = robustlab img/s / plain img/s; > 1 is faster):")
    for r in results:
        print("  " + verdict(r, args.noisy))
    print(f"load average before: {load_before} | after: {load_after} (cpus {os.cpu_count()})")
    print(
        "(x imgs = images trained on per clean image; clean img/s = training-split images per "
        "second;\n trained/s = images the model trained on per second, copies included, PGD "
        "attack passes not;\n spread = max/min time over the repeats, robustlab/plain)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "source": source,
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "load": [load_before, load_after],
                    "results": [
                        {
                            "strategy": r.name,
                            "clean_images": r.clean,
                            "trained_images": r.trained,
                            "seconds": r.seconds,
                            "ratio": r.ratio(),
                            "load": r.load,
                            "note": r.note,
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
