"""PGD throughput: robustlab against torchattacks and a plain PyTorch loop, in the same run.

Run it in the peer environment (``bash benchmarks/setup_peers.sh`` once):

    .bench-venv/bin/python benchmarks/bench_pgd.py

L-inf PGD, 40 steps of 2.5 * eps / 40 at eps 0.3, with a random start, on the lin2022 CNN
(``lin2022_cnn``, trained for 2 epochs first) and a batch of 256 MNIST digits (``mnist-sample``,
no download). Every implementation does the same work (same model, batch, eps, step, steps;
cross-entropy; the last iterate); they run interleaved, ``--repeats`` times each after a
warm-up, and the table shows the median time, images/s and the spread (max / min) over the
repeats. The load average is printed before and after: on a shared machine, rerun when it is
low.

Rows:

- ``robustlab``: ``robustlab.attack.PGD`` (channels-last convolution weights, frozen
  parameters, input gradient by ``torch.autograd.grad``, fused in-place step and projection);
- ``torchattacks``: ``torchattacks.PGD`` 3.5.1 (``pip install --no-deps torchattacks``);
- ``plain``: the textbook loop (``requires_grad`` on the input, ``autograd.grad``, sign step,
  clamp to the ball and the box), default memory layout;
- ``plain, channels_last``: the same loop with model and input in channels-last layout, to
  show how much of the gain the layout alone gives.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attack import PGD
from robustlab.data.datasets import load_dataset
from robustlab.models import create_model
from robustlab.seeding import make_generator
from robustlab.train.loop import TrainingRecipe, build_model, make_optimizer, train_epochs

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def plain_pgd(eps: float, alpha: float, steps: int, channels_last: bool) -> Attack:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        return adv.detach()

    return run


def robustlab_pgd(eps: float, alpha: float, steps: int) -> Attack:
    attack = PGD(eps=eps, steps=steps, step_size=alpha)
    generator = make_generator(0)

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(model, x, y, generator)

    return run


def torchattacks_pgd(eps: float, alpha: float, steps: int) -> Attack | None:
    try:
        import torchattacks
    except ImportError:
        return None

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        return attack(x, y)  # type: ignore[no-any-return]

    return run


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    alpha = 2.5 * args.eps / args.steps

    data = load_dataset("mnist-sample")
    x, y = next(data.test.batches(args.batch))
    # A trained model (2 epochs on the sample's 4,000 training digits, seeded; ~10 s), so that
    # the accuracy each attack leaves says whether it did its job.
    recipe = TrainingRecipe(
        architecture="lin2022_cnn", dataset="mnist-sample", epochs=2, learning_rate=1e-3
    )
    model = build_model(recipe)
    optimizer = make_optimizer(recipe, model)
    train_epochs(model, optimizer, data.train, recipe, start_epoch=0, end_epoch=recipe.epochs)
    model.eval()
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    model_cl = create_model("lin2022_cnn").eval()
    model_cl.load_state_dict(model.state_dict())
    model_cl = model_cl.to(memory_format=torch.channels_last)

    runs: dict[str, tuple[nn.Module, Attack]] = {
        "robustlab": (model, robustlab_pgd(args.eps, alpha, args.steps)),
        "plain": (model, plain_pgd(args.eps, alpha, args.steps, channels_last=False)),
        "plain, channels_last": (
            model_cl,
            plain_pgd(args.eps, alpha, args.steps, channels_last=True),
        ),
    }
    peer = torchattacks_pgd(args.eps, alpha, args.steps)
    if peer is not None:
        runs["torchattacks"] = (model, peer)
    else:
        print("torchattacks is not installed: run bash benchmarks/setup_peers.sh", file=sys.stderr)

    print(
        f"torch {torch.__version__} | python {platform.python_version()} | "
        f"threads {torch.get_num_threads()} | cpu {platform.processor() or platform.machine()}"
    )
    print(
        f"PGD L-inf, eps {args.eps}, {args.steps} steps of {alpha:.5f}, random start, "
        f"lin2022_cnn, batch {args.batch} (mnist-sample), {args.repeats} repeats after a warm-up"
    )
    load_before = load()
    accuracy: dict[str, float] = {}
    for name, (net, attack) in runs.items():  # warm-up, and a check that all do the same job
        torch.manual_seed(0)
        adv = attack(net, x, y)
        with torch.no_grad():
            accuracy[name] = float((model(adv).argmax(1) == y).float().mean())
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (net, attack) in runs.items():
            torch.manual_seed(0)
            began = time.perf_counter()
            attack(net, x, y)
            times[name].append(time.perf_counter() - began)
    load_after = load()

    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{'implementation':<24}{'seconds':>9}{'images/s':>11}{'spread':>8}{'accuracy':>10}")
    print("-" * 62)
    for name, seconds in median.items():
        spread = max(times[name]) / min(times[name])
        print(
            f"{name:<24}{seconds:>9.3f}{args.batch / seconds:>11.1f}{spread:>8.2f}"
            f"{accuracy[name]:>10.3f}"
        )
    print("-" * 62)
    for other in ("torchattacks", "plain", "plain, channels_last"):
        if other in median:
            print(f"ratio robustlab / {other:<22}: {median[other] / median['robustlab']:.2f}x")
    print(f"load average before: {load_before} | after: {load_after}")
    print(
        f"(accuracy: of the trained model, {clean:.3f} on the clean batch, on each "
        "implementation's adversarial images,"
    )
    print(" to show that every one did its job; spread = max/min time over repeats)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "times": times,
                    "median": median,
                    "accuracy": accuracy,
                    "clean_accuracy": clean,
                    "load": [load_before, load_after],
                    "threads": torch.get_num_threads(),
                    "batch": args.batch,
                    "steps": args.steps,
                    "eps": args.eps,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
