"""Inference and training cost of huang2021's learned denoisers in front of lin2022's CNN.

huang2021 put a learned pixel denoiser in front of a frozen classifier
(:mod:`robustlab.models.denoisers`). This measures, on 28 x 28 single-channel images (MNIST's
shape; random pixels: the cost of a pass does not depend on them), four variants at U-Net
base width ``--width`` (8 in the project's MNIST study):

- **filtering K=3**: ``huang2021_denoiser``, one filtering head (a 3 x 3 kernel per pixel);
- **additive**: ``huang2021_denoiser`` predicting the inverse perturbation;
- **multi-head x4**: ``huang2021_denoiser`` with 4 filtering heads on one U-Net (Sec. 3.4),
  ``default_head=0`` at inference, each head trained on its own strengths;
- **advfilter**: ``huang2021_advfilter`` (Y-Net, two filtering decoders, fusion network).

For each it reports

1. **inference**: ``classifier(denoiser(x))`` (:class:`~robustlab.models.denoised.Denoised`, the
   study's composite) in eval mode under ``torch.no_grad`` on one batch of ``--batch`` images,
   as images per second and as a ratio to the bare classifier ``classifier(x)`` on the same
   batch, the two timed alternately in the same run;
2. **gradient**: one white-box gradient, forward and backward of the cross-entropy to the input
   (what an adaptive attack pays per step), through denoiser and classifier against the bare
   classifier, on the same batch;
3. **training**: seconds per 1,000 training examples of the real step loop: the production
   strategy's ``loss`` (``denoise`` with huang2021's twelve strengths, its four head groups for
   the multi-head model; ``advfilter`` with ``ynet_epochs=1``, both stages: epoch 0 trains the
   Y-Net, epoch 1 the fusion against the frozen classifier), then ``zero_grad``, ``backward``
   and an Adam step (lr 1e-3, batch 50), over ``--images`` shuffled rows of an
   :class:`~robustlab.train.adversarial_examples.AdversarialExamples` built from random clean
   images and random float16 perturbations bounded by each strength (no attack is run: the
   examples' cost is generation, paid once per classifier and not measured here);
4. the number of parameters of each network.

The classifier is a freshly initialised ``lin2022_cnn``, frozen as the training loop freezes a
denoiser's parent. Every time is the median of ``--repeats`` runs after a warm-up.
About 2 minutes at one thread at width 8 and 3.5 minutes at width 16 on a shared 2-vCPU VM.

Run:
    python benchmarks/bench_denoisers.py --threads 1
        [--width 8] [--repeats 3] [--images 1000] [--batch 500] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.device import tune_cpu_allocator
from robustlab.models import create_model
from robustlab.models.denoised import Denoised
from robustlab.models.denoisers import EPSILONS_PER_HEAD
from robustlab.train.adversarial_examples import AdversarialExamples
from robustlab.train.strategy import StepContext, Strategy, create_strategy

SIDE = 28
CHANNELS = 1
CLASSES = 10
TRAIN_BATCH = 50
LEARNING_RATE = 1e-3


@dataclass
class Variant:
    """A denoiser to measure: its architecture and parameters, and the strategy training it."""

    name: str
    architecture: str
    params: dict[str, object]
    strategy: Callable[[], Strategy]
    stages: tuple[tuple[str, int], ...] = (("", 0),)  # (label, StepContext epoch)


def variants(width: int) -> list[Variant]:
    shape: dict[str, object] = {"in_channels": CHANNELS, "image_size": SIDE, "width": width}
    heads = [list(group) for group in EPSILONS_PER_HEAD]
    return [
        Variant(
            "filtering K=3",
            "huang2021_denoiser",
            {**shape, "mode": "filtering", "kernel_size": 3},
            lambda: create_strategy("denoise"),
        ),
        Variant(
            "additive",
            "huang2021_denoiser",
            {**shape, "mode": "additive"},
            lambda: create_strategy("denoise"),
        ),
        Variant(
            "multi-head x4",
            "huang2021_denoiser",
            {**shape, "mode": "filtering", "heads": 4, "default_head": 0},
            lambda: create_strategy("denoise", head_strengths=heads),
        ),
        Variant(
            "advfilter",
            "huang2021_advfilter",
            shape,
            lambda: create_strategy("advfilter", ynet_epochs=1),
            stages=(("Y-Net", 0), ("fusion", 1)),
        ),
    ]


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def elapsed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return model(x)

    return run


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    """One white-box attack step's work: cross-entropy forward and backward to the input."""

    def run() -> object:
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(xg), y), xg)

    return run


def examples_for(strategy: Strategy, count: int, seed: int) -> AdversarialExamples:
    """About ``count`` rows of random examples at the strategy's strengths (no attack run)."""
    strengths: tuple[float, ...] = strategy.strengths  # type: ignore[attr-defined]
    images = max(1, math.ceil(count / len(strengths)))
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(images, CHANNELS, SIDE, SIDE, generator=g)
    labels = torch.randint(CLASSES, (images,), generator=g)
    deltas = [
        ((torch.rand(clean.shape, generator=g) * 2 - 1) * s).to(torch.float16) for s in strengths
    ]
    return AdversarialExamples(clean, labels, deltas, strengths, [0.0] * len(strengths))


def train_pass(
    strategy: Strategy,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: AdversarialExamples,
    epoch: int,
    order: torch.Tensor,
) -> int:
    """The production step loop (:func:`robustlab.train.loop.train_epochs`) over ``order``."""
    strategy.train_mode(model)
    context = StepContext(
        epoch=epoch, total_epochs=2, generator=torch.Generator(), num_classes=CLASSES
    )
    for x, rows in examples.batches(TRAIN_BATCH, order=order):
        loss = strategy.loss(model, x, rows, context)
        if not torch.isfinite(loss):
            raise RuntimeError(f"the loss is {float(loss)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.eval()
    return context.images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=8, help="U-Net base width (MNIST study: 8)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--images", type=int, default=1000, help="training examples timed")
    parser.add_argument("--batch", type=int, default=500, help="inference and gradient batch")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    torch.manual_seed(0)
    classifier = create_model("lin2022_cnn").eval()
    # Frozen, as the model cache hands a denoiser strategy its parent (FrozenParent).
    classifier.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, CHANNELS, SIDE, SIDE, generator=g)
    y = torch.randint(CLASSES, (args.batch,), generator=g)

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    load_before = load
    print(
        f"torch {torch.__version__} | python {platform.python_version()} | threads "
        f"{torch.get_num_threads()} | cpus {os.cpu_count()} | {cpu} | load average {load}"
    )
    print(
        f"{SIDE}x{SIDE}x{CHANNELS} random images, U-Net width {args.width}, lin2022_cnn "
        f"({parameters(classifier):,} parameters); inference and gradient: batch {args.batch}; "
        f"training: Adam lr {LEARNING_RATE:g}, batch {TRAIN_BATCH}, {args.images:,} examples; "
        f"median of {args.repeats}"
    )
    header = (
        f"{'denoiser':<22} {'params':>8} {'infer ms':>9} {'img/s':>7} {'x bare':>7} "
        f"{'grad ms':>8} {'x bare':>7} {'train s/1k':>10}"
    )
    print(header)
    print("-" * len(header))
    bare_infer: list[float] = []
    bare_grad: list[float] = []
    rows: list[dict[str, Any]] = []
    for index, variant in enumerate(variants(args.width)):
        torch.manual_seed(10 + index)
        denoiser = create_model(variant.architecture, **variant.params).eval()
        composite = Denoised(denoiser, classifier).eval()
        runs = {
            "infer": (inference(composite, x[:50]), inference(classifier, x[:50])),
            "grad": (gradient(composite, x[:50], y[:50]), gradient(classifier, x[:50], y[:50])),
        }
        for pair in runs.values():  # warm-up
            for fn in pair:
                fn()
        times: dict[str, list[float]] = {"infer": [], "bare infer": [], "grad": [], "bare grad": []}
        for repeat in range(args.repeats):
            measured = [
                ("infer", inference(composite, x)),
                ("bare infer", inference(classifier, x)),
                ("grad", gradient(composite, x, y)),
                ("bare grad", gradient(classifier, x, y)),
            ]
            for label, fn in measured if repeat % 2 == 0 else measured[::-1]:
                times[label].append(elapsed(fn))
        bare_infer += times["bare infer"]
        bare_grad += times["bare grad"]
        med = {k: statistics.median(v) for k, v in times.items()}

        strategy = variant.strategy()
        strategy.classifier = classifier  # type: ignore[attr-defined]
        examples = examples_for(strategy, args.images, seed=100 + index)
        strategy.examples = examples  # type: ignore[attr-defined]
        optimizer = torch.optim.Adam(denoiser.parameters(), lr=LEARNING_RATE)
        shuffle = torch.Generator().manual_seed(200 + index)
        train: dict[str, float] = {}
        for stage, epoch in variant.stages:
            warm = torch.randperm(len(examples), generator=shuffle)[: 2 * TRAIN_BATCH]
            train_pass(strategy, denoiser, optimizer, examples, epoch, warm)
            runs_s = []
            for _ in range(args.repeats):
                order = torch.randperm(len(examples), generator=shuffle)[: args.images]
                began = time.perf_counter()
                seen = train_pass(strategy, denoiser, optimizer, examples, epoch, order)
                runs_s.append(time.perf_counter() - began)
                assert seen == len(order), (seen, len(order))
            train[stage] = 1000 * statistics.median(runs_s) / args.images

        rows.append(
            {
                "variant": variant.name,
                "parameters": parameters(denoiser),
                "median_s": med,
                "times_s": times,
                "infer_over_bare": med["infer"] / med["bare infer"],
                "grad_over_bare": med["grad"] / med["bare grad"],
                "train_s_per_1k": train,
            }
        )
        first = variant.stages[0][0]
        name = variant.name if not first else f"{variant.name} ({first})"
        row = (
            f"{name:<22} {parameters(denoiser):>8,} {1000 * med['infer']:>9.1f} "
            f"{args.batch / med['infer']:>7,.0f} {med['infer'] / med['bare infer']:>6.1f}x "
            f"{1000 * med['grad']:>8.1f} {med['grad'] / med['bare grad']:>6.1f}x "
            f"{train[first]:>10.2f}"
        )
        print(row, flush=True)
        for stage, _ in variant.stages[1:]:
            label = f"{variant.name} ({stage})"
            print(
                f"{label:<22} {'':>8} {'':>9} {'':>7} {'':>7} {'':>8} {'':>7} {train[stage]:>10.2f}"
            )
    bare_i, bare_g = statistics.median(bare_infer), statistics.median(bare_grad)
    print(
        f"{'bare classifier':<22} {parameters(classifier):>8,} {1000 * bare_i:>9.1f} "
        f"{args.batch / bare_i:>7,.0f} {'1.0x':>7} {1000 * bare_g:>8.1f} {'1.0x':>7}"
    )
    print("-" * len(header))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average after: {load}")
    if args.json is not None:
        payload = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "cpu": cpu,
            "width": args.width,
            "batch": args.batch,
            "images": args.images,
            "repeats": args.repeats,
            "load": [load_before, load],
            "classifier_parameters": parameters(classifier),
            "bare_median_s": {"infer": bare_i, "grad": bare_g},
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
