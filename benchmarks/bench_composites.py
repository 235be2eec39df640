"""Inference overhead of every composite model against its single-model baseline.

A composite answers with several networks (:mod:`robustlab.study.composites`): an ensemble of
``K`` members, ghosh2018's master-slave router (MS: a quality master and one branch per image;
AMS: every branch), adaptive filter selection (a detector, then the filter of each image's
kind, then the classifier). For each, on real MNIST test digits (``$ROBUSTLAB_DATA`` or
``../shared/datasets``, else the embedded ``mnist-sample``), this times

- **single**: the base network alone (the composite's oblivious source: ensemble member 1,
  router branch 1, the adaptive filter's classifier), a plain forward pass;
- **robustlab**: the composite module's forward pass without gradients (inference);
- **plain**: the same composite written out by hand in plain PyTorch (the floor: what the
  composite must cost at least; for the router over a ``joint_branches`` network, three
  separate networks holding its trunk and heads);
- **attack step**: one forward and backward pass to the input with gradients, the cost of
  one step of a white-box attack through the whole composite (the soft-decision surrogate),
  against the same step on the single network.

It prints medians over ``--repeats`` interleaved runs and the ratios ``robustlab / single``
(the overhead a user pays) and ``plain / robustlab`` (> 1: robustlab is faster than the
hand-written floor). The networks are freshly initialised (the cost of a forward pass does not
depend on training); the router's master and the detector then route most images one way,
which is the cost of a trained router on one kind of input (each image still runs one branch /
one filter). The routing shares are printed. About 1 minute at one thread.

Run:
    python benchmarks/bench_composites.py [--images 1000] [--repeats 5] [--threads 1]
        [--members 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.data.datasets import load_dataset
from robustlab.defend import create_defense
from robustlab.device import tune_cpu_allocator
from robustlab.models import create_model
from robustlab.models.adaptive_filter import AdaptiveFilter
from robustlab.models.ensemble import Ensemble
from robustlab.models.master_slave import MasterSlave
from robustlab.models.shared_trunk import Branch, SharedTrunkBranches


def _images(count: int) -> torch.Tensor:
    data_dir = os.environ.get("ROBUSTLAB_DATA") or str(
        Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
    try:
        dataset = load_dataset("mnist", data_dir=data_dir)
    except Exception:  # any failure: fall back to the embedded sample
        dataset = load_dataset("mnist-sample")
    x, _ = next(dataset.test.batches(count))
    return x


def _net(name: str, seed: int, **params: Any) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **params).eval()


def _time(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _step(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(xg)[:, 0].sum(), xg)

    return run


def _plain_ensemble(members: list[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0).log()

    return run


def _plain_ms(
    master: nn.Module, branches: list[nn.Module]
) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        chosen = master(x).argmax(dim=1)
        out = torch.empty(len(x), 10)
        for k, branch in enumerate(branches):
            index = (chosen == k).nonzero().flatten()
            if len(index):
                out[index] = branch(x[index]).log_softmax(dim=1)
        return out

    return run


def _plain_ams(branches: list[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([b(x).log_softmax(dim=1) for b in branches], dim=1)
        chosen = log_probs.amax(dim=2).argmax(dim=1)
        return log_probs[torch.arange(len(x)), chosen]

    return run


def _plain_filter(
    detector: nn.Module, classifier: nn.Module, filters: list[nn.Module]
) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        chosen = detector(x).argmax(dim=1)
        cleaned = x.clone()
        for k, f in enumerate(filters):
            index = (chosen == k).nonzero().flatten()
            if len(index):
                cleaned[index] = f(x[index])
        return classifier(cleaned)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--members", type=int, default=5, help="ensemble size (aghdam2016: 5)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    x = _images(args.images)

    members = [_net("aghdam2016_mnist", s) for s in range(args.members)]
    branches = [_net("ghosh2018_mnist", s) for s in range(3)]
    master = _net("ghosh2018_quality", 10, num_classes=3)
    detector = _net("ghosh2018_quality", 11, num_classes=4)
    classifier = _net("lin2022_cnn", 12)
    filters = [
        create_defense("none"),
        create_defense("median", size=3),
        create_defense("gaussian", sigma=1.0),
        create_defense("jpeg", quality=50),
    ]
    # ghosh2018's slave as one network (joint_branches): one trunk, three fc6-fc8 heads; the
    # floor is three separate networks holding the same weights.
    joint = SharedTrunkBranches(_net("ghosh2018_mnist", 0), branches=3, layers=3).eval()
    with torch.no_grad():
        for p in joint.heads.parameters():
            p.mul_(1.5)
    joint_copies = [joint.base]
    for k in (1, 2):
        copy = _net("ghosh2018_mnist", 0)
        for name, layer in zip(joint.head_names, joint.head_modules(k), strict=True):
            copy.get_submodule(name).load_state_dict(layer.state_dict())
        joint_copies.append(copy)
    cases: dict[str, tuple[nn.Module, nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = {
        f"ensemble of {args.members} (probability)": (
            members[0],
            Ensemble(members).eval(),
            _plain_ensemble(members),
        ),
        "master-slave MS (3 branches)": (
            branches[0],
            MasterSlave(branches, master).eval(),
            _plain_ms(master, branches),
        ),
        "MS over a joint trunk (3 heads)": (
            joint.base,
            MasterSlave([Branch(joint, k) for k in range(3)], master).eval(),
            _plain_ms(master, joint_copies),
        ),
        "master-slave AMS (3 branches)": (
            branches[0],
            MasterSlave(branches).eval(),
            _plain_ams(branches),
        ),
        "adaptive filter (4 kinds)": (
            classifier,
            AdaptiveFilter(detector, classifier, filters).eval(),
            _plain_filter(detector, classifier, filters),
        ),
    }
    load = os.getloadavg()[0]
    print(f"{args.images} MNIST test digits, {args.threads} thread(s), load average {load:.1f}")
    header = (
        f"{'composite':34} {'single ms':>9} {'robustlab ms':>12} {'plain ms':>9} "
        f"{'overhead x':>10} {'plain/rl':>8} {'step x':>7}"
    )
    print(header)
    results = []
    for name, (single, composite, plain) in cases.items():
        with torch.no_grad():
            composite(x[:50])
            plain(x[:50])
            single(x[:50])
        times: dict[str, list[float]] = {"single": [], "robustlab": [], "plain": []}
        steps: dict[str, list[float]] = {"single": [], "robustlab": []}
        for repeat in range(args.repeats):
            runs: list[tuple[str, Callable[[], object]]] = [
                ("robustlab", lambda c=composite: _no_grad(c, x)),
                ("plain", lambda p=plain: p(x)),
                ("single", lambda s=single: _no_grad(s, x)),
            ]
            for label, run in runs if repeat % 2 == 0 else runs[::-1]:
                times[label].append(_time(run))
            steps["robustlab"].append(_time(_step(composite, x)))
            steps["single"].append(_time(_step(single, x)))
        med = {k: statistics.median(v) for k, v in times.items()}
        step = {k: statistics.median(v) for k, v in steps.items()}
        route = getattr(composite, "route", None)
        shares = ""
        if route is not None:
            counts = torch.bincount(route(x), minlength=3)
            shares = " routed " + "/".join(f"{100 * int(c) / len(x):.0f}%" for c in counts)
        row = {
            "composite": name,
            "single_s": med["single"],
            "robustlab_s": med["robustlab"],
            "plain_s": med["plain"],
            "overhead": med["robustlab"] / med["single"],
            "plain_over_robustlab": med["plain"] / med["robustlab"],
            "attack_step_overhead": step["robustlab"] / step["single"],
        }
        results.append(row)
        print(
            f"{name:34} {1000 * med['single']:9.1f} {1000 * med['robustlab']:12.1f} "
            f"{1000 * med['plain']:9.1f} {row['overhead']:10.2f} "
            f"{row['plain_over_robustlab']:8.2f} {row['attack_step_overhead']:7.2f}{shares}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"threads": args.threads, "load": load, "rows": results}))


def _no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(x)
    return out


if __name__ == "__main__":
    main()
