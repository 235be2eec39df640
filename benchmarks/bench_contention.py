"""Throughput when another process holds a core: why every worker limits its threads.

PyTorch (and OpenCV) start one thread per core. When another process keeps one core busy (a
second study, a Ray worker next door), a multi-threaded kernel waits for the thread that shares
the busy core, at every synchronisation: small tensor ops slow down by orders of magnitude.
robustlab's executors therefore set the threads to the CPUs they were given
(:func:`robustlab.device.limit_threads`; ``--cpus``, Ray's ``cpus_per_task``).

For a few workloads of a study (the 3x3 median of robustlab's ``median`` defence on a batch of
512 CIFAR-sized images, Gaussian noise on it, the lin2022 CNN's forward pass on 64 MNIST digits, and
OpenCV's ``medianBlur`` on the same pixels as the peer) this measures, in one run:

- idle: the machine's default threads (one per core), nothing else running;
- contended, default threads: a busy-loop process holds one core;
- contended, limited: the same, with threads limited to the cores left (``cpus - 1``).

Ratios: ``limited / default`` under contention (> 1: limiting the threads helps) and
robustlab's median against OpenCV's under contention, each library limited the same way.

Run:
    python benchmarks/bench_contention.py [--seconds 1.0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from robustlab.defend import create_defense
from robustlab.defend.filters import median_opencv
from robustlab.degrade import create_degradation
from robustlab.device import limit_threads
from robustlab.models import create_model
from robustlab.seeding import make_generator


def _burn(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


def _rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``work`` over about ``seconds`` (after one warm-up call)."""
    work()
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        work()
        calls += 1
    return calls / elapsed


def _workloads() -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    cifar = torch.rand(512, 3, 32, 32, generator=g)
    digits = torch.rand(64, 1, 28, 28, generator=g)
    median = create_defense("median", size=3)
    noise = create_degradation("gaussian_noise", sigma=0.1)
    model = create_model("lin2022_cnn").eval()
    noise_generator = make_generator(1)

    def forward() -> object:
        with torch.no_grad():
            return model(digits)

    return {
        "median 3x3 (robustlab)": lambda: median(cifar),
        "median 3x3 (OpenCV)": lambda: median_opencv(cifar, 3),
        "gaussian noise": lambda: noise(cifar, noise_generator),
        "lin2022 CNN forward": forward,
    }


def _measure(seconds: float, threads: int) -> dict[str, float]:
    import cv2

    limit_threads(threads)
    cv2.setNumThreads(threads)
    return {name: _rate(work, seconds) for name, work in _workloads().items()}


def main() -> None:
    """Measure the three conditions and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per workload and condition")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    default = torch.get_num_threads()
    if cpus < 2:
        raise SystemExit("needs at least 2 CPUs (one is kept busy)")
    print(f"{cpus} CPUs, PyTorch default threads {default}, torch {torch.__version__}")
    idle = _measure(args.seconds, default)
    stop = multiprocessing.Event()
    burner = multiprocessing.Process(target=_burn, args=(stop,), daemon=True)
    burner.start()
    try:
        time.sleep(0.2)
        contended = _measure(args.seconds, default)
        limited = _measure(args.seconds, max(1, cpus - 1))
    finally:
        stop.set()
        burner.join()
    print(
        f"{'workload':<26}{'idle /s':>10}{'busy core /s':>14}{'limited /s':>12}{'limit gain':>12}"
    )
    for name in idle:
        gain = limited[name] / contended[name]
        print(
            f"{name:<26}{idle[name]:>10.1f}{contended[name]:>14.1f}{limited[name]:>12.1f}"
            f"{gain:>11.2f}x"
        )
    ours, peer = "median 3x3 (robustlab)", "median 3x3 (OpenCV)"
    print(
        f"robustlab median vs OpenCV under contention: default threads "
        f"{contended[ours] / contended[peer]:.2f}x, limited {limited[ours] / limited[peer]:.2f}x"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"cpus": cpus, "idle": idle, "contended": contended, "limited": limited},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
