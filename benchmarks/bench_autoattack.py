"""AutoAttack and APGD: robustlab against torchattacks and the reference AutoAttack, same run.

Run it in the peer environment (``bash benchmarks/setup_peers.sh`` once; for the reference
implementation also ``AUTOATTACK_SRC=/path/to/fra31/auto-attack bash benchmarks/setup_peers.sh``,
it is not on PyPI):

    .bench-venv/bin/python benchmarks/bench_autoattack.py --images 200

For each model it attacks the same first ``--images`` test images with

- ``pgd-40x10``: robustlab's PGD-40 (step 2.5 eps / 40) from 10 random restarts, the bar the
  issue sets (``autoattack`` must be at least as strong on every image set);
- ``apgd-ce``: APGD on the cross-entropy, 100 steps, one restart: robustlab's ``apgd``,
  ``torchattacks.APGD`` and the reference ``autoattack.autopgd_base.APGDAttack``;
- ``autoattack``: the standard version (APGD-CE, APGD-T and FAB-T with 100 steps and 9
  targets, Square with 5,000 queries): robustlab's, the reference ``autoattack.AutoAttack``,
  and torchattacks' components with the reference's settings (``torchattacks-std``: a
  ``MultiAttack`` of ``APGD``, ``APGDT`` and ``FAB`` with ``steps=100``, ``Square`` with
  ``resc_schedule=False``); and ``robustlab-plus``, robustlab's plus version (the standard
  sequence, then FMN and Square searched per image as the Square paper's code does);
- ``autoattack-10``: ``torchattacks.AutoAttack(version="standard")`` as it ships, whose APGD,
  APGD-T and FAB run their default 10 steps (not the reference's 100: cheaper and weaker),
  beside robustlab's standard version with ``steps: 10``, so that its speed has a like-for-like
  row too;

and prints robust accuracy, seconds and the time ratio peer / robustlab. Every implementation is
warmed up on a few images first (the first call of a process pays for oneDNN's kernel
selection and the allocator: measured 9.6 s against 7.5 s for the same APGD run), then the
implementations of one attack run interleaved, ``--repeats`` times for APGD and PGD and
``--autoattack-repeats`` times (default once: minutes each) for AutoAttack; the table shows the
fastest repeat. Models (trained on first use, then served from the model cache):

- ``quickstart``: the quickstart study's lin2022 CNN (15 epochs on the embedded MNIST sample),
  attacked at L-inf eps 0.1 (at 0.3 every implementation leaves 0%);
- ``madry``: the adversarially trained Madry network of ``papers/madry-pgd-mnist``
  (``adversarial-e10``; needs real MNIST: ``ROBUSTLAB_DATA``), at L-inf eps 0.3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robustlab.attack import APGD, PGD, AutoAttack
from robustlab.data import load_dataset
from robustlab.paths import model_cache_dir
from robustlab.seeding import make_generator
from robustlab.study.config import load_config
from robustlab.study.plan import plan_models
from robustlab.train.cache import ModelCache

Run = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ATTACK_ROWS = ("pgd-40x10", "apgd-ce", "autoattack", "autoattack-10")
CONFIGS = {
    "quickstart": ("src/robustlab/configs/quickstart.yaml", "cnn-e15", 0.1),
    "madry": ("src/robustlab/configs/papers/madry-pgd-mnist.yaml", "adversarial-e10", 0.3),
}


def load_model(
    name: str, images: int, offset: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    path, model_id, eps = CONFIGS[name]
    config = load_config(Path(__file__).resolve().parents[1] / path)
    planned = next(m for m in plan_models(config) if m.id == model_id)
    assert planned.recipe is not None and not planned.parents
    dataset = load_dataset(config.dataset.name, data_dir=os.environ.get("ROBUSTLAB_DATA"))
    served = ModelCache(model_cache_dir()).get_or_train(planned.recipe, dataset)
    x, y = next(dataset.test.batches(offset + images))
    return served.model.eval(), x[offset:], y[offset:], eps


def ours(attack: PGD | APGD | AutoAttack, seed: int = 0) -> Run:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(model, x, y, make_generator(seed))

    return run


def peers(eps: float, classes: int, seed: int = 0) -> dict[str, dict[str, Run]]:
    found: dict[str, dict[str, Run]] = {"apgd-ce": {}, "autoattack": {}, "autoattack-10": {}}
    try:
        import torchattacks

        def ta_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            attack = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1,
                                       loss="ce", seed=seed)  # fmt: skip
            return attack(x, y)  # type: ignore[no-any-return]

        def ta_auto(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # As shipped: APGD, APGD-T and FAB with torchattacks' default of 10 steps.
            attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                             n_classes=classes, seed=seed)  # fmt: skip
            return attack(x, y)  # type: ignore[no-any-return]

        def ta_standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # The same components with the reference's standard settings.
            attack = torchattacks.MultiAttack([
                torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1,
                                  loss="ce", seed=seed),
                torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1,
                                   n_classes=classes, seed=seed),
                torchattacks.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1,
                                 multi_targeted=True, n_classes=classes, seed=seed),
                torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1,
                                    resc_schedule=False, seed=seed),
            ])  # fmt: skip
            return attack(x, y)  # type: ignore[no-any-return]

        found["apgd-ce"]["torchattacks"] = ta_apgd
        found["autoattack"]["torchattacks-std"] = ta_standard
        found["autoattack-10"]["torchattacks"] = ta_auto
    except ImportError:
        print("torchattacks is not installed: run bash benchmarks/setup_peers.sh", file=sys.stderr)
    try:
        from autoattack import AutoAttack as ReferenceAutoAttack
        from autoattack.autopgd_base import APGDAttack

        def ref_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            attack = APGDAttack(model, n_iter=100, norm="Linf", n_restarts=1, eps=eps,
                                loss="ce", seed=seed, device=x.device)  # fmt: skip
            return attack.perturb(x, y)  # type: ignore[no-any-return]

        def ref_auto(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            attack = ReferenceAutoAttack(model, norm="Linf", eps=eps, version="standard",
                                         device=x.device, verbose=False, seed=seed)  # fmt: skip
            return attack.run_standard_evaluation(x, y, bs=len(x))  # type: ignore[no-any-return]

        found["apgd-ce"]["reference"] = ref_apgd
        found["autoattack"]["reference"] = ref_auto
    except ImportError:
        print(
            "the reference AutoAttack is not installed: AUTOATTACK_SRC=<checkout of "
            "github.com/fra31/auto-attack> bash benchmarks/setup_peers.sh",
            file=sys.stderr,
        )
    return found


def attack_table(eps: float, classes: int, seed: int) -> list[tuple[str, str, Run]]:
    """Every (attack row, implementation, run) at ``eps`` with ``seed``."""
    mine: list[tuple[str, str, Run]] = [
        ("pgd-40x10", "robustlab", ours(PGD(eps=eps, steps=40, restarts=10), seed)),
        ("apgd-ce", "robustlab", ours(APGD(eps=eps, steps=100), seed)),
        ("autoattack", "robustlab", ours(AutoAttack(eps=eps, version="standard"), seed)),
        ("autoattack", "robustlab-plus", ours(AutoAttack(eps=eps, version="plus"), seed)),
        (
            "autoattack-10",
            "robustlab",
            ours(AutoAttack(eps=eps, version="standard", steps=10), seed),
        ),
    ]
    for attack, implementations in peers(eps, classes, seed).items():
        mine += [(attack, peer, run) for peer, run in implementations.items()]
    return mine


def measure(
    run: Run, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0
) -> tuple[float, float]:
    torch.manual_seed(seed)
    began = time.perf_counter()
    adversarial = run(model, x, y)
    seconds = time.perf_counter() - began
    with torch.no_grad():
        accuracy = float((model(adversarial).argmax(dim=1) == y).float().mean())
    return accuracy, seconds


def measure_interleaved(
    runs: list[tuple[str, Run]],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    repeats: int,
    seed: int = 0,
    warm_up: bool = True,
) -> dict[str, tuple[float, float]]:
    """``implementation -> (robust accuracy of the first repeat, fastest seconds)``."""
    for _, run in runs if warm_up else []:  # warm-up on a few images
        run(model, x[:8], y[:8])
    out: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):
        for name, run in runs:
            accuracy, seconds = measure(run, model, x, y, seed)
            first, best = out.get(name, (accuracy, seconds))
            out[name] = (first, min(best, seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--offset", type=int, default=0, help="skip the first N test images")
    parser.add_argument("--models", default="quickstart,madry")
    parser.add_argument(
        "--attacks", default=",".join(ATTACK_ROWS), help="which attack rows to run, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of APGD and PGD")
    parser.add_argument("--autoattack-repeats", type=int, default=1)
    parser.add_argument(
        "--seeds",
        default="0",
        help="AutoAttack seeds, comma-separated: each implementation runs once per seed, and "
        "the gaps are compared on the mean (Square is random: one seed moves it by points)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument(
        "--implementations",
        default=None,
        help="only these implementations, comma-separated (e.g. robustlab,reference)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.attacks.split(",")) - set(ATTACK_ROWS))
    if unknown:
        parser.error(f"unknown --attacks {unknown}; choose from {', '.join(ATTACK_ROWS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__} | python {platform.python_version()} | "
        f"threads {torch.get_num_threads()} | cpu {platform.processor() or platform.machine()}"
    )
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.models.split(","):
        model, x, y, eps = load_model(name, args.images, args.offset)
        with torch.no_grad():
            clean = float((model(x).argmax(dim=1) == y).float().mean())
        classes = int(model(x[:1]).shape[1])
        rows: dict[str, dict[str, float]] = {}
        seeds = [int(seed) for seed in args.seeds.split(",")]

        print(
            f"\n{name}: L-inf eps {eps}, test images {args.offset}-{args.offset + len(x) - 1}, "
            f"clean accuracy {clean:.3f}"
        )
        print(f"{'attack':<15}{'implementation':<20}{'robust acc':>11}{'seconds':>10}{'ratio':>8}")
        for attack in args.attacks.split(","):
            automatic = attack.startswith("autoattack")
            for seed in seeds if automatic else seeds[:1]:
                runs = [
                    (impl, run)
                    for row, impl, run in attack_table(eps, classes, seed)
                    if row == attack
                    and (args.implementations is None or impl in args.implementations.split(","))
                ]
                if not runs:
                    continue
                repeats = args.autoattack_repeats if automatic else args.repeats
                measured = measure_interleaved(
                    runs, model, x, y, repeats, seed, warm_up=seed == seeds[0]
                )
                for implementation, (accuracy, seconds) in measured.items():
                    label = (
                        f"{implementation} s{seed}"
                        if len(seeds) > 1 and automatic
                        else implementation
                    )
                    rows[f"{attack}/{label}"] = {"accuracy": accuracy, "seconds": seconds}
                    base = rows.get(
                        f"{attack}/{label.replace(implementation, 'robustlab')}",
                        {"seconds": seconds},
                    )["seconds"]
                    print(
                        f"{attack:<15}{label:<20}{100 * accuracy:>10.1f}%{seconds:>10.1f}"
                        f"{seconds / base:>7.2f}x",
                        flush=True,
                    )
            if automatic and len(seeds) > 1:
                for implementation in {
                    k.split("/")[1].split(" ")[0] for k in rows if k.startswith(f"{attack}/")
                }:
                    found = [rows[f"{attack}/{implementation} s{seed}"] for seed in seeds
                             if f"{attack}/{implementation} s{seed}" in rows]  # fmt: skip
                    if len(found) == len(seeds):
                        rows[f"{attack}/{implementation}"] = {
                            "accuracy": sum(r["accuracy"] for r in found) / len(found),
                            "seconds": sum(r["seconds"] for r in found) / len(found),
                        }
                        accuracies = ", ".join(f"{100 * r['accuracy']:.1f}" for r in found)
                        print(
                            f"{attack:<15}{implementation + ' mean':<20}"
                            f"{100 * rows[f'{attack}/{implementation}']['accuracy']:>10.2f}%"
                            f"{rows[f'{attack}/{implementation}']['seconds']:>10.1f}   "
                            f"(seeds {args.seeds}: {accuracies})"
                        )
        if "autoattack/robustlab" in rows and "pgd-40x10/robustlab" in rows:
            auto = rows["autoattack/robustlab"]["accuracy"]
            pgd = rows["pgd-40x10/robustlab"]["accuracy"]
            print(
                f"autoattack at least as strong as pgd-40x10: {auto <= pgd} "
                f"({auto:.3f} <= {pgd:.3f})"
            )
        for mine in ("robustlab", "robustlab-plus"):
            for peer in ("torchattacks-std", "reference"):
                other = rows.get(f"autoattack/{peer}")
                if other is not None and f"autoattack/{mine}" in rows:
                    gap = 100 * (rows[f"autoattack/{mine}"]["accuracy"] - other["accuracy"])
                    print(
                        f"autoattack {mine} vs {peer}: {gap:+.2f} points "
                        f"(within 1 point: {abs(gap) <= 1})"
                    )
        results[name] = rows
    print(
        "(ratio: seconds / robustlab's seconds for the same attack; > 1 means robustlab is faster)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
