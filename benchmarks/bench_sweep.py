"""Benchmark of a study's evaluation sweep: where the time goes, and how far it is from the floor.

A study's evaluation (``robustlab.study.executor.evaluate_group``) streams the test set once per
group (model x degradation setting x trial). Each batch is converted to float and degraded
``copies`` times (1 unless the study asks for Monte-Carlo copies) with the group's seeded
generator; the input quality of each degraded copy is measured (PSNR, and SSIM of the first copy;
skipped for the clean setting or when the study turns ``quality_metrics`` off); each copy is sent
through every input defence of the group, and every defended batch goes through the model
(forward, logit check, argmax, confusion accumulation).

This script loads a study (the quickstart by default) exactly as ``robustlab run`` does, gets its
first model from the model cache (training it once if needed; training is not timed) and
measures, on the same test batches:

* **phases** - the sweep over every group of the first model, re-implemented step for step like
  ``evaluate_group`` but with ``time.perf_counter`` around each phase:

  - ``load``: uint8 test batch -> float32 in [0, 1] on the device (``Split.batches``);
  - ``degrade``: the degradation, one call per batch, copy and group;
  - ``quality``: PSNR (and on the first copy SSIM) of the degraded batch against the clean one;
  - ``defend``: the input defences (identity, box, median filters), one call per batch, copy
    and defence, also broken down per defence;
  - ``predict``: model forward + ``check_logits`` + argmax + ``bincount`` into the confusion.

  Its confusion matrices are checked to equal those of the production path, so both did the
  same work.
* **sweep total** - the real ``evaluate_group`` end to end for the same groups, called with the
  study's copies and quality setting as ``execute`` calls it (the production path, without
  progress callbacks, example images or per-sample records, which the quickstart leaves off).
  The phase sum should come close to it; the difference (``other``) is Python glue, set-up per
  group and the timers themselves.
* **pure inference** - the floor: only ``model(x)`` on the clean test batches, repeated as many
  times as the sweep feeds batches to the model, so the same number of images.

The ratio ``sweep_total / pure_inference`` says how much degradation, quality metrics, defences
and bookkeeping add on top of model inference: ideally close to ``1 + filter cost``. Every
measurement runs under ``torch.inference_mode()`` (as production does), with
``torch.cuda.synchronize()`` around timed regions on CUDA. After a warm-up (the first group of
each degradation kind through each measurement) each measurement runs ``--repeats`` times, the
three interleaved within a repeat so background load hits them alike; each number reported is
the median over the repeats (taken per number, so the phase medians need not add up exactly to
the median of their sum). As a noise check the table also gives the ratio of the fastest
repeats and the max/min spread of the repeats; on a busy machine rerun it, or raise
``--repeats``.

Run:
    python benchmarks/bench_sweep.py [--config quickstart] [--device auto] [--repeats 3]
        [--cache DIR] [--data-dir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.data.base import Split
from robustlab.defend import create_defense
from robustlab.degrade import create_degradation
from robustlab.device import resolve_device
from robustlab.errors import RobustlabError
from robustlab.metrics import psnr, ssim
from robustlab.models.base import check_logits
from robustlab.seeding import make_generator
from robustlab.study.config import load_config
from robustlab.study.executor import evaluate_group
from robustlab.study.plan import Group, make_plan
from robustlab.study.runner import data_fingerprint, prepare_dataset, resolve_config_path
from robustlab.train.cache import ModelCache

PHASES = ("load", "degrade", "quality", "defend", "predict")


@dataclass
class Sweep:
    """Everything one measurement needs: model, groups, data and defences."""

    model: nn.Module
    groups: list[Group]
    test: Split
    num_classes: int
    batch_size: int
    device: torch.device
    defenses: dict[str, nn.Module]
    quality: bool

    @property
    def batches_per_group(self) -> int:
        """Test batches per pass over the test set."""
        return -(-len(self.test) // self.batch_size)

    @property
    def copies(self) -> int:
        """Degraded copies of the test set over all groups."""
        return sum(g.copies for g in self.groups)

    @property
    def quality_copies(self) -> int:
        """Degraded copies whose PSNR (and SSIM) ``evaluate_group`` measures."""
        if not self.quality:
            return 0
        return sum(g.copies for g in self.groups if g.setting.name != "none")

    @property
    def model_images(self) -> int:
        """Images the sweep feeds to the model: copies x defences x test images."""
        return self.copies * len(self.defenses) * len(self.test)


@dataclass
class PhaseRun:
    """Seconds per phase (and per defence) of one phased sweep, with its confusion matrices."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    per_defense: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    confusion: list[dict[str, torch.Tensor]] = field(default_factory=list)
    psnr_sum: float = 0.0
    psnr_count: int = 0
    ssim_sum: float = 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_batches(
    split: Split, batch_size: int, device: torch.device, clock: Callable[[float], None]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``split.batches`` with the time spent producing each batch handed to ``clock``."""
    batches = split.batches(batch_size, device)
    while True:
        _sync(device)
        began = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            return
        _sync(device)
        clock(time.perf_counter() - began)
        yield x, y


@torch.inference_mode()
def run_phased(s: Sweep) -> PhaseRun:
    """The sweep, step for step like ``evaluate_group``, timing each phase separately."""
    run = PhaseRun(per_defense=dict.fromkeys(s.defenses, 0.0))
    n2 = s.num_classes * s.num_classes

    def add_load(dt: float) -> None:
        run.seconds["load"] += dt

    _sync(s.device)
    began = time.perf_counter()
    for group in s.groups:
        degradation = create_degradation(group.setting.name, **group.setting.params)
        generator = make_generator(group.seed, s.device)
        measure = s.quality and group.setting.name != "none"
        confusion = {
            label: torch.zeros(n2, dtype=torch.int64, device=s.device) for label in s.defenses
        }
        for x, y in _timed_batches(s.test, s.batch_size, s.device, add_load):
            for copy in range(group.copies):
                t0 = time.perf_counter()
                degraded = degradation(x, generator)
                _sync(s.device)
                t1 = time.perf_counter()
                run.seconds["degrade"] += t1 - t0
                if measure:  # as evaluate_group: sums pulled to the host, so no sync needed
                    batch_psnr = psnr(degraded, x)
                    finite = torch.isfinite(batch_psnr)
                    run.psnr_sum += float(batch_psnr[finite].sum())
                    run.psnr_count += int(finite.sum())
                    if copy == 0:
                        run.ssim_sum += float(ssim(degraded, x).sum())
                    run.seconds["quality"] += time.perf_counter() - t1
                for label, defense in s.defenses.items():
                    t0 = time.perf_counter()
                    defended = defense(degraded)
                    _sync(s.device)
                    t1 = time.perf_counter()
                    logits = check_logits(s.model(defended), len(y), s.num_classes)
                    predicted = logits.argmax(dim=1)
                    confusion[label] += torch.bincount(y * s.num_classes + predicted, minlength=n2)
                    _sync(s.device)
                    t2 = time.perf_counter()
                    run.seconds["defend"] += t1 - t0
                    run.per_defense[label] += t1 - t0
                    run.seconds["predict"] += t2 - t1
        run.confusion.append(
            {k: v.view(s.num_classes, s.num_classes).cpu() for k, v in confusion.items()}
        )
    _sync(s.device)
    run.total = time.perf_counter() - began
    return run


def run_production(s: Sweep) -> tuple[float, list[dict[str, torch.Tensor]]]:
    """The real ``evaluate_group`` over every group: seconds and confusion matrices."""
    matrices = []
    _sync(s.device)
    began = time.perf_counter()
    for group in s.groups:
        result = evaluate_group(
            s.model,
            group,
            s.test,
            s.num_classes,
            batch_size=s.batch_size,
            device=s.device,
            defenses=s.defenses,
            copies=group.copies,
            quality=s.quality,
            record_copies=0,
        )
        matrices.append(result.confusion)
    _sync(s.device)
    return time.perf_counter() - began, matrices


@torch.inference_mode()
def run_inference(s: Sweep, batches: list[torch.Tensor]) -> float:
    """The floor: ``model(x)`` alone, on the clean batches, as many batches as the sweep."""
    rounds = s.copies * len(s.defenses)
    _sync(s.device)
    began = time.perf_counter()
    for _ in range(rounds):
        for x in batches:
            s.model(x)
    _sync(s.device)
    return time.perf_counter() - began


def _device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from ``/proc/cpuinfo`` where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def _rate(images: int, seconds: float) -> str:
    return f"{images / seconds:>12,.0f}" if seconds > 0 else f"{'-':>12}"


def _table(results: dict[str, Any]) -> str:
    """The human-readable report."""
    c = results["counts"]
    m = results["median_seconds"]
    lo = results["min_seconds"]
    total = m["sweep_total"]

    def spread(key: str) -> float:
        values = results["samples_seconds"][key]
        return float(max(values) / min(values)) if min(values) > 0 else float("nan")

    rows: list[tuple[str, int, float]] = [
        ("load (uint8 -> float)", c["degrade_images"], m["load"]),
        ("degrade", c["degrade_images"], m["degrade"]),
        ("quality (PSNR, SSIM)", c["quality_images"], m["quality"]),
        ("defend (all filters)", c["model_images"], m["defend"]),
    ]
    rows += [
        (f"  defend: {label}", c["degrade_images"], sec)
        for label, sec in m["defend_per_defense"].items()
    ]
    rows += [
        ("predict (fwd+argmax+bincount)", c["model_images"], m["predict"]),
        ("phase sum", c["model_images"], m["phase_sum"]),
        ("other (sweep total - phase sum)", c["model_images"], total - m["phase_sum"]),
        ("SWEEP TOTAL (evaluate_group)", c["model_images"], total),
        ("pure inference (floor)", c["model_images"], m["pure_inference"]),
    ]
    lines = [
        f"{'measurement':<34}{'images':>9}{'seconds':>10}{'images/s':>12}{'share':>8}",
        "-" * 73,
    ]
    for name, images, sec in rows:
        share = f"{100 * sec / total:>7.1f}%" if total > 0 else f"{'-':>8}"
        rate = f"{'-':>12}" if name.startswith("other") else _rate(images, sec)
        lines.append(f"{name:<34}{images:>9,}{sec:>10.3f}{rate}{share}")
    lines += [
        "-" * 73,
        f"ratio sweep_total / pure_inference : {results['ratio']:.2f}x",
        f"ratio phase_sum / sweep_total      : {m['phase_sum'] / total:.3f} "
        f"(phased loop wall time {m['phased_total']:.3f} s)",
        f"noise check, fastest repeat of each: sweep_total {lo['sweep_total']:.3f} s, "
        f"pure_inference {lo['pure_inference']:.3f} s, ratio {results['ratio_of_minima']:.2f}x",
        f"spread over repeats (max/min)      : sweep_total {spread('sweep_total'):.2f}, "
        f"pure_inference {spread('pure_inference'):.2f}, phase_sum {spread('phase_sum'):.2f}",
        "(share = fraction of the sweep total; images = images through that phase;",
        " seconds = median of the repeats, each number on its own)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quickstart", help="study file or built-in name")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up")
    parser.add_argument("--cache", default=None, help="model cache dir (default: normal cache)")
    parser.add_argument("--data-dir", default=None, help="data dir (default: normal data dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    try:
        config_path = resolve_config_path(args.config)
        config = load_config(config_path)
        device = resolve_device(args.device)
        dataset = prepare_dataset(config, args.data_dir)
    except RobustlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plan = make_plan(config, data_fingerprint(dataset))
    planned = plan.models[0]
    cache = ModelCache(args.cache)
    began = time.perf_counter()
    served = cache.get_or_train(planned.recipe, dataset, device)
    if served.trained_epochs:
        print(
            f"trained {planned.id} ({served.trained_epochs} epochs) in "
            f"{time.perf_counter() - began:.1f} s, not timed",
            file=sys.stderr,
        )
    sweep = Sweep(
        model=served.model.to(device).eval(),
        groups=[g for g in plan.groups if g.model.id == planned.id],
        test=dataset.test,
        num_classes=dataset.num_classes,
        batch_size=config.batch_size,
        device=device,
        defenses={
            d.label: create_defense(d.name, **d.params).to(device).eval() for d in plan.defenses
        },
        quality=config.quality_metrics,
    )
    clean = [x for x, _ in sweep.test.batches(sweep.batch_size, device)]

    # Warm-up, not timed: the first group of each degradation kind through each measurement,
    # enough to build every kernel, primitive cache and allocator pool the sweep uses (a whole
    # sweep would add a third to the run time for nothing). It also checks that the phased
    # sweep does exactly what production does: same batches, noise and confusion matrices.
    warm = replace(sweep, groups=list({g.setting.name: g for g in reversed(sweep.groups)}.values()))
    phased = run_phased(warm)
    if not _same(phased.confusion, run_production(warm)[1]):
        print("error: the phased sweep and evaluate_group disagree", file=sys.stderr)
        return 1
    run_inference(warm, clean)

    samples: dict[str, list[float]] = {
        k: [] for k in (*PHASES, "phase_sum", "phased_total", "sweep_total", "pure_inference")
    }
    per_defense: dict[str, list[float]] = {label: [] for label in sweep.defenses}
    for _ in range(args.repeats):
        phased = run_phased(sweep)
        for phase in PHASES:
            samples[phase].append(phased.seconds[phase])
        samples["phase_sum"].append(sum(phased.seconds.values()))
        samples["phased_total"].append(phased.total)
        for label, sec in phased.per_defense.items():
            per_defense[label].append(sec)
        samples["sweep_total"].append(run_production(sweep)[0])
        samples["pure_inference"].append(run_inference(sweep, clean))

    median: dict[str, Any] = {k: statistics.median(v) for k, v in samples.items()}
    median["defend_per_defense"] = {k: statistics.median(v) for k, v in per_defense.items()}
    results: dict[str, Any] = {
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "device_name": _device_name(device),
            "threads": torch.get_num_threads(),
        },
        "study": {
            "config": str(config_path),
            "model": planned.id,
            "groups": len(sweep.groups),
            "defenses": list(sweep.defenses),
            "test_images": len(sweep.test),
            "batch_size": sweep.batch_size,
            "copies": sweep.copies,
            "quality_metrics": sweep.quality,
            "repeats": args.repeats,
        },
        "counts": {
            "degrade_images": sweep.copies * len(sweep.test),
            "quality_images": sweep.quality_copies * len(sweep.test),
            "model_images": sweep.model_images,
            "model_batches": sweep.copies * len(sweep.defenses) * sweep.batches_per_group,
        },
        "median_seconds": median,
        "ratio": median["sweep_total"] / median["pure_inference"],
        "min_seconds": {k: min(v) for k, v in samples.items()},
        "ratio_of_minima": min(samples["sweep_total"]) / min(samples["pure_inference"]),
        "samples_seconds": {**samples, "defend_per_defense": per_defense},
    }

    env, study = results["environment"], results["study"]
    print(
        f"torch {env['torch']} | device {env['device']} ({env['device_name']}) | "
        f"threads {env['threads']} | python {env['python']}"
    )
    print(
        f"study {config.name}: model {study['model']}, {study['groups']} groups "
        f"(setting x trial; {study['copies']} copies of the test set) x "
        f"{len(study['defenses'])} defences ({', '.join(study['defenses'])}), "
        f"{study['test_images']} test images, batch {study['batch_size']}, quality metrics "
        f"{'on' if study['quality_metrics'] else 'off'}, "
        f"median of {study['repeats']} repeats after a warm-up"
    )
    print()
    print(_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
