"""The whole performance suite in one command: one table of ratios, each measured in this run.

``benchmarks/run`` (which creates ``.bench-venv`` first if it is missing) runs this script with
the benchmark environment's interpreter. It runs every benchmark script below as a subprocess of
the same interpreter with ``--json`` into a work folder, reads the JSON files back and prints
one table. Every row compares robustlab with a reference measured by the same script in the
same run, and its ratio is oriented so that **> 1.0 means robustlab is better** (faster, or
less memory):

- ``degradations`` (``bench_degradations.py``): every degradation and filter against its
  fastest peer (imagecorruptions, OpenCV, SciPy, scikit-image, kornia, Pillow, NumPy or plain
  torch, whichever was fastest in this run), images/s, on MNIST digits and RGB 32x32 crops;
- ``pgd`` (``bench_pgd.py``): PGD against ``torchattacks.PGD`` and the plain PyTorch loop
  (default and channels-last layout), seconds;
- ``autoattack`` (``bench_autoattack.py``, a small slice): APGD-CE against torchattacks and the
  reference implementation (when installed), and AutoAttack with 10 steps against
  ``torchattacks.AutoAttack`` as it ships, seconds;
- ``sweep`` (``bench_sweep.py``): the quickstart's evaluation sweep against pure inference on
  as many images (a floor: the ratio is below 1 by construction);
- ``copies`` (``bench_copies.py``): the aghdam2016 Monte-Carlo sweep against pure inference,
  and peak memory at the most copies against the fewest, and at the most test images against
  the fewest (flat = 1.0);
- ``strategies`` (``bench_strategies.py``): each training strategy that has a hand-written
  plain PyTorch loop against that loop doing the same work, one epoch, seconds;
- ``ray`` (``bench_ray.py``): the Ray executor against the local one on the same study, cold
  and warm model cache, wall seconds;
- ``contention`` (``bench_contention.py``): with another process holding a core, robustlab's
  thread limit against the default threads, and its median against OpenCV's, calls/s;
- ``composites`` (``bench_composites.py``): each composite model against a hand-written plain
  PyTorch equivalent, inference seconds;
- ``denoisers`` (``bench_denoisers.py``): the denoised composite against the bare classifier,
  inference and one attack step (a floor: below 1 by construction).

A ratio below 1.0 always carries a note: for floors and the Ray executor, what the gap is
made of (from figures of this run); against a peer, the explanation that the benchmark's
documentation (``benchmarks/README.md``, ``benchmarks/PEERS.md``) gives for that case, else a
plain "slower than ... in this run". Sizes are chosen so that the whole suite takes well under
15 minutes on an idle 2-core machine (``--quick``: a few minutes, for a smoke test).

Run:
    benchmarks/run [--quick] [--only AREA ...] [--threads 1] [--json PATH] [--markdown PATH]
        [--keep DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
NOISE = 0.05  # ratios within 5 % of 1.0 are on par: the threshold the benchmarks themselves use


# --------------------------------------------------------------------------------------------
# The table


@dataclass
class Row:
    """One comparison: robustlab's figure, the reference's, and how to read their ratio.

    ``better`` says which direction is better for robustlab's figure: ``"higher"`` for rates
    (images/s), ``"lower"`` for seconds and memory. ``ratio`` is then oriented so that > 1.0
    always means robustlab is better.
    """

    area: str
    what: str
    against: str
    robustlab: float
    reference: float
    unit: str
    better: str
    kind: str = "peer"  # peer | plain loop | floor | executor | memory
    note: str = ""
    spread: tuple[float, float] | None = None  # max/min over repeats: robustlab, reference
    load: float | None = None  # 1-minute load average at the end of its benchmark

    @property
    def ratio(self) -> float:
        if self.better == "higher":
            return self.robustlab / self.reference
        return self.reference / self.robustlab

    def as_dict(self) -> dict[str, Any]:
        """The row for JSON: its fields and ratio (a spread of one repeat as null)."""
        out = {**asdict(self), "ratio": self.ratio}
        if self.spread is not None:
            out["spread"] = [None if math.isnan(v) else v for v in self.spread]
        return out


@dataclass(frozen=True)
class Explanation:
    """A documented reason for robustlab being below a peer: matched on area, what and against."""

    area: str
    what: tuple[str, ...]  # substrings that Row.what must all contain (() matches any)
    against: str  # substring of Row.against ("" matches any)
    text: str

    def matches(self, row: Row) -> bool:
        return (
            row.area == self.area
            and all(part.lower() in row.what.lower() for part in self.what)
            and self.against.lower() in row.against.lower()
        )


# What benchmarks/README.md and benchmarks/PEERS.md say about the cases where robustlab can come
# out below its reference. First match wins. No figures here: every figure printed is measured.
EXPLANATIONS: tuple[Explanation, ...] = (
    Explanation(
        "degradations",
        ("JPEG quality", "3x32x32"),
        "",
        "colour JPEG is decoded image by image by OpenCV's imdecode in both (libjpeg-turbo's "
        "fancy upsampling crosses MCU rows, so images cannot share a decode); robustlab's "
        "worker threads gain nothing while other work holds the cores (benchmarks/PEERS.md)",
    ),
    Explanation(
        "degradations",
        ("JPEG 2000",),
        "",
        "parity: robustlab codes each image with the same Pillow/OpenJPEG call, spread over "
        "forked worker processes; with the cores taken by other work the pool gains nothing and "
        "costs the transfers (benchmarks/PEERS.md)",
    ),
    Explanation(
        "degradations",
        ("median",),
        "OpenCV",
        "robustlab's CPU median is one OpenCV medianBlur call on a mosaic of the padded batch "
        "(padding and cropping on top); the noisiest row of the degradation benchmark from run "
        "to run (benchmarks/PEERS.md)",
    ),
    Explanation(
        "degradations",
        ("Gaussian noise",),
        "torch",
        "the same four in-place torch ops as the reference (randn from an explicit generator, "
        "mul, add, clamp), so a gap is the machine's load between repeats, not the code",
    ),
    Explanation(
        "contention",
        ("median",),
        "OpenCV",
        "one thread each: robustlab's exact median is about 20 elementwise tensor ops over "
        "the batch, which a single thread runs one after another, where OpenCV's medianBlur "
        "is one SIMD pass; with the cores free robustlab's spreads over them (the "
        "degradations rows)",
    ),
    Explanation(
        "degradations",
        ("salt & pepper",),
        "torch",
        "the same draws as plain torch plus a compound mask; level with plain torch within the "
        "run-to-run noise in the documented runs (benchmarks/PEERS.md)",
    ),
    Explanation(
        "pgd",
        (),
        "channels-last",
        "this loop has robustlab's main gain too, the channels-last layout; in the documented "
        "runs robustlab was level with it within the noise (benchmarks/README.md)",
    ),
    Explanation(
        "strategies",
        ("augment",),
        "",
        "the same forward and backward passes in both loops: one augment step timed alone costs "
        "the same in both, the noisy copies too; lower ratios came and went with the machine's "
        "load (benchmarks/README.md)",
    ),
    Explanation(
        "strategies",
        (),
        "",
        "the same forward and backward passes in both loops: on par at 1 thread in "
        "benchmarks/README.md, where lower ratios came and went with the machine's load",
    ),
    Explanation(
        "composites",
        (),
        "",
        "the same networks on the same images: robustlab's modules cost what the hand-written "
        "equivalents cost (benchmarks/README.md)",
    ),
)


def explain(row: Row) -> str:
    """The note of a row below 1.0 (peers and plain loops; other kinds bring their own)."""
    documented = next((e.text for e in EXPLANATIONS if e.matches(row)), None)
    text = documented or f"slower than {row.against} in this run"
    if row.ratio >= 1 - NOISE:
        text += f"; within {100 * NOISE:.0f} % (on par at the benchmarks' noise threshold)"
    return text


def _extras(row: Row) -> str:
    parts = []
    if row.spread is not None and not any(math.isnan(s) for s in row.spread):
        parts.append(f"spread robustlab/reference {row.spread[0]:.2f}/{row.spread[1]:.2f}")
    if row.load is not None:
        parts.append(f"load average {row.load:.1f} after the benchmark")
    return f" ({', '.join(parts)})" if parts else ""


def finish_notes(rows: list[Row]) -> list[Row]:
    """Give every row below 1.0 an explanation (measured context appended)."""
    for row in rows:
        if row.ratio < 1 and not row.note:
            row.note = explain(row) + _extras(row)
        elif row.ratio < 1 and row.kind in ("peer", "plain loop"):
            row.note = f"{explain(row)}; {row.note}{_extras(row)}"
    return rows


# --------------------------------------------------------------------------------------------
# From each benchmark's JSON to rows


def _spread(values: Sequence[float]) -> float:
    """Max / min over the repeats (NaN for a single repeat: no spread to speak of)."""
    return max(values) / min(values) if len(values) > 1 and min(values) > 0 else float("nan")


def _option(args: Sequence[str], name: str, default: str) -> str:
    """The value given to ``name`` in a benchmark's argument list (``default`` if absent)."""
    args = list(args)
    return args[args.index(name) + 1] if name in args else default


def rows_degradations(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """Each robustlab degradation and filter against the fastest peer of the same operation."""
    rows: list[Row] = []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in data["rows"]:
        groups.setdefault((r["size"], r["operation"]), []).append(r)
    for (size, operation), members in groups.items():
        ours = [r for r in members if r["library"] == "robustlab"]
        peers = [r for r in members if r["library"] != "robustlab"]
        if not ours or not peers:
            continue
        fastest = max(peers, key=lambda r: r["images_per_s"])
        rows.append(
            Row(
                "degradations",
                f"{operation}, {size.split(' ')[0]}, {data.get('n', '?')} images",
                fastest["implementation"],
                ours[0]["images_per_s"],
                fastest["images_per_s"],
                "img/s",
                "higher",
                spread=(ours[0]["spread"], fastest["spread"]),
            )
        )
    return rows


def rows_pgd(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """robustlab's PGD against torchattacks and the plain loops (median seconds)."""
    names = {
        "torchattacks": ("torchattacks.PGD", "peer"),
        "plain": ("plain PyTorch loop", "plain loop"),
        "plain, channels_last": ("plain PyTorch loop, channels-last", "plain loop"),
    }
    what = f"PGD L-inf eps {data['eps']}, {data['steps']} steps, batch {data['batch']}"
    times, median = data["times"], data["median"]
    rows = []
    for key, (label, kind) in names.items():
        if key not in median:
            continue
        row = Row(
            "pgd",
            what,
            label,
            median["robustlab"],
            median[key],
            "s",
            "lower",
            kind=kind,
            spread=(_spread(times["robustlab"]), _spread(times[key])),
        )
        if abs(data["accuracy"][key] - data["accuracy"]["robustlab"]) > 0:
            row.note = (
                f"accuracy left: robustlab {data['accuracy']['robustlab']:.3f}, "
                f"{label} {data['accuracy'][key]:.3f}"
            )
        rows.append(row)
    return rows


ATTACK_NAMES = {
    "apgd-ce": "APGD-CE, 100 steps",
    "autoattack": "AutoAttack standard",
    "autoattack-10": "AutoAttack standard, 10 steps",
    "pgd-40x10": "PGD-40 x 10 restarts",
}
PEER_NAMES = {
    ("apgd-ce", "torchattacks"): "torchattacks.APGD",
    ("apgd-ce", "reference"): "reference APGDAttack (fra31/auto-attack)",
    ("autoattack", "torchattacks-std"): "torchattacks components, reference settings",
    ("autoattack", "reference"): "reference AutoAttack (fra31/auto-attack)",
    ("autoattack-10", "torchattacks"): "torchattacks.AutoAttack as shipped (10 steps)",
}


def rows_autoattack(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """Each attack of the slice against each peer that ran it (fastest repeat, seconds)."""
    images = _option(args, "--images", "200")
    rows = []
    for model, results in data.items():
        for key, peer in results.items():
            attack, implementation = key.split("/", 1)
            ours = results.get(f"{attack}/robustlab")
            if implementation.startswith("robustlab") or ours is None:
                continue
            row = Row(
                "autoattack",
                f"{ATTACK_NAMES.get(attack, attack)}, {model} model, {images} images",
                PEER_NAMES.get((attack, implementation), implementation),
                ours["seconds"],
                peer["seconds"],
                "s",
                "lower",
            )
            if abs(ours["accuracy"] - peer["accuracy"]) > 0:
                row.note = (
                    f"robust accuracy differs: robustlab {100 * ours['accuracy']:.1f}%, "
                    f"{implementation} {100 * peer['accuracy']:.1f}%"
                )
            rows.append(row)
    return rows


def rows_sweep(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """The study's evaluation sweep against pure inference on as many images (a floor)."""
    study, median = data["study"], data["median_seconds"]
    defences = len(study["defenses"])
    row = Row(
        "sweep",
        f"{Path(study['config']).stem} sweep ({study['groups']} groups x {defences} defences, "
        f"{data['counts']['model_images']:,} model images)",
        "pure inference, same images (floor)",
        median["sweep_total"],
        median["pure_inference"],
        "s",
        "lower",
        kind="floor",
        spread=(
            _spread(data["samples_seconds"]["sweep_total"]),
            _spread(data["samples_seconds"]["pure_inference"]),
        ),
    )
    row.note = (
        f"a floor: the sweep costs {1 / row.ratio:.2f}x pure inference. On top of the forward "
        "passes: degradation, PSNR/SSIM, the filters and bookkeeping, and the forward pass is "
        "slower on noisy pixels than on the clean floor (benchmarks/README.md)"
    )
    return [row]


def _copies(count: int) -> str:
    return f"{count} cop{'y' if count == 1 else 'ies'}"


COPIES_TARGET = 1.3  # bench_copies.py's target: sweep <= 1.3x pure inference


def rows_copies(runs: Sequence[Mapping[str, Any]], args: Sequence[str]) -> list[Row]:
    """Monte-Carlo sweep against pure inference per copies count; peak memory in copies and in
    test images."""
    data = [r for r in runs if r.get("series", "copies") == "copies"]
    rows = []
    most_copies = max(run["copies"] for run in data)
    for run in data:
        row = Row(
            "copies",
            f"aghdam2016 Monte-Carlo sweep, {_copies(run['copies'])}, {run['images']:,} images",
            "pure inference, same images (floor)",
            run["sweep_s"],
            run["inference_s"],
            "s",
            "lower",
            kind="floor",
        )
        verdict = "met" if 1 / row.ratio <= COPIES_TARGET else "MISSED"
        target = (
            f" (target at the most copies <= {COPIES_TARGET}x: {verdict})"
            if run["copies"] == most_copies
            else ""
        )
        row.note = (
            f"a floor: the sweep costs {1 / row.ratio:.2f}x pure inference{target}; the noise "
            "and PSNR of every copy are paid on top, and the SSIM of the first copy and the "
            "clean setting once per group, so the ratio falls as copies grow "
            "(benchmarks/README.md)"
        )
        rows.append(row)
    if len(data) >= 2:
        fewest = min(data, key=lambda r: r["copies"])
        most = max(data, key=lambda r: r["copies"])
        row = Row(
            "copies",
            f"peak memory (RSS), {most['copies']} copies against {fewest['copies']}",
            f"the same sweep with {_copies(fewest['copies'])}",
            most["peak_rss_mib"],
            fewest["peak_rss_mib"],
            "MiB",
            "lower",
            kind="memory",
        )
        if row.ratio < 1:
            row.note = (
                f"{most['copies'] / fewest['copies']:.0f}x the copies, "
                f"{1 / row.ratio:.2f}x the peak: flat would be 1.0. Nothing is kept between "
                "copies but counters and the recorded copies; the drift is heap "
                "fragmentation over a longer run (benchmarks/README.md)"
            )
        rows.append(row)
    samples = [r for r in runs if r.get("series") == "images"]
    if len(samples) >= 2:
        fewest = min(samples, key=lambda r: r["test_images"])
        most = max(samples, key=lambda r: r["test_images"])
        row = Row(
            "copies",
            f"sweep peak memory (RSS), {most['test_images']:,} test images against "
            f"{fewest['test_images']:,}",
            f"the same sweep on {fewest['test_images']:,} images",
            most["peak_rss_sweep_mib"],
            fewest["peak_rss_sweep_mib"],
            "MiB",
            "lower",
            kind="memory",
        )
        if row.ratio < 1:
            row.note = (
                f"{most['test_images'] / fewest['test_images']:.0f}x the images, "
                f"{1 / row.ratio:.2f}x the peak (flat would be 1.0): the test set itself grows "
                f"from {fewest['test_set_mib']:.1f} to {most['test_set_mib']:.1f} MiB and the "
                "recorded copies keep per-sample arrays; degraded images are streamed batch by "
                "batch, never held (benchmarks/README.md)"
            )
        rows.append(row)
    return rows


def rows_strategies(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """Each strategy's epoch against the plain PyTorch loop doing the same work (median s)."""
    rows = []
    for r in data["results"]:
        seconds = r["seconds"]
        if "plain" not in seconds:
            continue
        rows.append(
            Row(
                "strategies",
                f"{r['strategy']}: one epoch, {r['clean_images']:,} images",
                "plain PyTorch loop, same work",
                statistics.median(seconds["robustlab"]),
                statistics.median(seconds["plain"]),
                "s",
                "lower",
                kind="plain loop",
                spread=(_spread(seconds["robustlab"]), _spread(seconds["plain"])),
            )
        )
    return rows


RAY_ACCEPTANCE = 1.5  # the Ray executor's acceptance: at most 1.5x the local executor


def rows_ray(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """The Ray executor against the local one on the same study, cold and warm cache."""
    runs = data["runs"]
    study = _option(args, "--study", "quickstart")
    study = Path(study).stem if study.endswith(".yaml") else study
    rows = []
    for state, what in (("cold", "cold cache: training + evaluation"), ("warm", "warm cache")):
        ray, local = runs[f"ray {state}"], runs[f"local {state}"]
        row = Row(
            "ray",
            f"{study} study, {what} ({local['cells']} cells)",
            "local executor, same study",
            ray["seconds"],
            local["seconds"],
            "s",
            "lower",
            kind="executor",
        )
        verdict = "met" if 1 / row.ratio <= RAY_ACCEPTANCE else "MISSED"
        if state == "cold":
            noise = ", below zero: within the noise" if data["per_training"] < 0 else ""
            cause = (
                f"and its overhead per training ({data['per_training']:.1f} s: Ray's cold-minus-"
                f"warm time over the local executor's, per trained model{noise})"
            )
        else:
            per_cell = 1000 * data["per_cell"]
            noise = ", below zero: within the noise" if per_cell < 0 else ""
            cause = f"and the scheduling of its shard tasks ({per_cell:.0f} ms per cell{noise})"
        if state == "cold":  # the study as a user first runs it, training included
            verdict = f"acceptance <= {RAY_ACCEPTANCE}x: {verdict}"
        else:
            verdict = f"a rerun from the model cache, {'within' if verdict == 'met' else 'above'} "
            verdict += f"{RAY_ACCEPTANCE}x"
        parts = data.get("startup_parts", {})
        split = (
            f" = ray.init {parts['init']:.1f} s + a worker's start and imports "
            f"{parts['first_task']:.1f} s + shut-down {parts['shutdown']:.1f} s, which a study "
            "overlaps with its report"
            if parts
            else ""
        )
        row.note = (
            f"Ray takes {1 / row.ratio:.2f}x the local wall time ({verdict}): its private "
            f"cluster's start-up and shut-down ({data['startup']:.1f} s measured alone{split}) "
            f"{cause}, on a study this small; "
            f"results.csv identical to the local run's: {'yes' if data['identical'] else 'NO'}"
        )
        rows.append(row)
    return rows


def rows_composites(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """Each composite model against its hand-written plain PyTorch equivalent (median s)."""
    return [
        Row(
            "composites",
            f"{r['composite']}: inference",
            "hand-written plain PyTorch equivalent",
            r["robustlab_s"],
            r["plain_s"],
            "s",
            "lower",
            kind="plain loop",
        )
        for r in data["rows"]
    ]


def rows_denoisers(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """Each denoised composite against the bare classifier: inference and one attack step."""
    rows = []
    for r in data["rows"]:
        med = r["median_s"]
        for key, what in (("infer", "inference"), ("grad", "one attack step (input gradient)")):
            rows.append(
                Row(
                    "denoisers",
                    f"{r['variant']}, width {data['width']}: {what}, batch {data['batch']}",
                    "lin2022_cnn alone, same batch (floor)",
                    med[key],
                    med[f"bare {key}"],
                    "s",
                    "lower",
                    kind="floor",
                    note="a floor: the cost of a denoiser in front of the classifier (1 / ratio "
                    "times the classifier alone); its U-Net runs at full 28x28 resolution "
                    "(benchmarks/README.md)",
                )
            )
    return rows


def rows_contention(data: Mapping[str, Any], args: Sequence[str]) -> list[Row]:
    """With a core held by another process: limited threads against default, and the median."""
    contended, limited = data["contended"], data["limited"]
    free = max(1, data["cpus"] - 1)
    rows = [
        Row(
            "contention",
            f"{name}, a core busy: threads limited to the {free} free (limit_threads)",
            "default threads (one per core)",
            limited[name],
            contended[name],
            "calls/s",
            "higher",
            kind="plain loop",
        )
        for name in contended
        if "OpenCV" not in name
    ]
    ours, peer = "median 3x3 (robustlab)", "median 3x3 (OpenCV)"
    if ours in limited and peer in limited:
        rows.append(
            Row(
                "contention",
                f"median 3x3, 512 RGB 32x32 images, a core busy, both limited to the {free} free",
                "OpenCV medianBlur",
                limited[ours],
                limited[peer],
                "calls/s",
                "higher",
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# The benchmarks and how the suite runs them


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script: its arguments (full and quick) and its rows."""

    area: str
    script: str
    full: str  # arguments, split on spaces
    quick: str
    rows: Callable[[Any, Sequence[str]], list[Row]]
    threads_flag: bool = True  # takes --threads N; else OMP_NUM_THREADS is set (if threads_env)
    threads_env: bool = False
    summary: str = ""


BENCHMARKS_RUN: tuple[Benchmark, ...] = (
    Benchmark(
        "degradations",
        "bench_degradations.py",
        "--n 1024 --repeats 3",
        "--n 256 --repeats 3",
        rows_degradations,
        summary="every degradation and filter against the fastest peer",
    ),
    Benchmark(
        "pgd",
        "bench_pgd.py",
        "--batch 128 --steps 40 --repeats 3",
        "--batch 32 --steps 10 --repeats 2",
        rows_pgd,
        summary="PGD against torchattacks and a plain PyTorch loop",
    ),
    Benchmark(
        "autoattack",
        "bench_autoattack.py",
        "--models quickstart --images 16 --attacks apgd-ce,autoattack-10 --repeats 3",
        "--models quickstart --images 16 --attacks apgd-ce --repeats 1",
        rows_autoattack,
        summary="APGD and AutoAttack-10 against torchattacks and the reference",
    ),
    Benchmark(
        "sweep",
        "bench_sweep.py",
        "--repeats 1",
        "--repeats 1",
        rows_sweep,
        threads_flag=False,
        threads_env=True,
        summary="the quickstart's sweep against pure inference",
    ),
    Benchmark(
        "copies",
        "bench_copies.py",
        "--copies 2 8 --images 500 --images-grid 500 3000",
        "--copies 1 4 --images 200 --images-grid 200 2000",
        rows_copies,
        threads_flag=False,
        threads_env=True,
        summary="Monte-Carlo copies against pure inference, peak memory in copies and images",
    ),
    Benchmark(
        "strategies",
        "bench_strategies.py",
        "--images 500 --warmup 200 --repeats 3 --denoiser-images 200",
        "--images 200 --warmup 100 --repeats 1 --denoiser-images 100",
        rows_strategies,
        summary="each training strategy against a plain PyTorch loop",
    ),
    Benchmark(
        "ray",
        "bench_ray.py",
        "",
        "",
        rows_ray,
        threads_flag=False,
        summary="the Ray executor against the local one on the same study",
    ),
    Benchmark(
        "contention",
        "bench_contention.py",
        "--seconds 1.0",
        "--seconds 0.3",
        rows_contention,
        threads_flag=False,
        summary="a core held by another process: limited threads, and the median against OpenCV",
    ),
    Benchmark(
        "composites",
        "bench_composites.py",
        "--images 300 --repeats 3",
        "--images 100 --repeats 1",
        rows_composites,
        summary="composite models against hand-written equivalents",
    ),
    Benchmark(
        "denoisers",
        "bench_denoisers.py",
        "--images 200 --batch 200 --repeats 3",
        "--images 100 --batch 100 --repeats 1",
        rows_denoisers,
        summary="denoised composites against the bare classifier",
    ),
)
BY_AREA = {b.area: b for b in BENCHMARKS_RUN}


def build_table(
    results: Mapping[str, Any],
    args: Mapping[str, Sequence[str]] | None = None,
    loads: Mapping[str, float] | None = None,
) -> list[Row]:
    """All rows of the table, notes included, from each area's parsed JSON.

    Args:
        results: area (a key of ``BY_AREA``) -> that benchmark's parsed ``--json`` output.
        args: area -> the arguments the benchmark ran with (sizes shown in the rows).
        loads: area -> the 1-minute load average when the benchmark finished.

    Returns:
        The rows in the suite's order, every ratio below 1.0 with a note.
    """
    rows: list[Row] = []
    for bench in BENCHMARKS_RUN:
        if bench.area not in results:
            continue
        new = bench.rows(results[bench.area], (args or {}).get(bench.area, ()))
        for row in new:
            row.load = (loads or {}).get(bench.area)
        rows += new
    return finish_notes(rows)


_COMPARED = """
import argparse, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_strategies", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["bench_strategies"] = module
spec.loader.exec_module(module)
from robustlab.train.strategy import STRATEGIES, load_builtin_strategies
load_builtin_strategies()
defaults = argparse.Namespace(copies=4, eps=0.3, pgd_steps=7)
print(json.dumps([n for n in STRATEGIES.names() if module.strategy_params(n, defaults)
                  is not None]))
"""


def compared_strategies() -> list[str]:
    """Registered strategies that ``bench_strategies.py`` has a plain loop for.

    Asked in a child process (it imports torch and robustlab): the strategies for which the
    script's ``strategy_params`` has parameters, i.e. a plain loop to compare with.
    """
    done = subprocess.run(
        [sys.executable, "-c", _COMPARED, str(BENCHMARKS / "bench_strategies.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    names: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return names


@dataclass
class Outcome:
    """How one benchmark ran."""

    area: str
    command: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    log: str = ""
    load_before: float | None = None
    load_after: float | None = None
    error: str = ""
    data: Any = field(default=None, repr=False)


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """The machine and software the suite ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("torch", "robustlab"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        **versions,
        "commit": commit or "?",
        "load_average": load,
    }


def _format_value(value: float, unit: str) -> str:
    if unit == "img/s":
        return f"{value:,.0f} img/s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "calls/s":
        return f"{value:,.1f} calls/s"
    return f"{value:.{3 if value < 10 else 2 if value < 100 else 1}f} s"


def format_ratio(ratio: float) -> str:
    """Two decimals, three below 0.1 (so that 0.004 does not print as 0.00)."""
    return f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}"


def _cells(row: Row) -> list[str]:
    return [
        row.area,
        row.what,
        row.against,
        _format_value(row.robustlab, row.unit),
        _format_value(row.reference, row.unit),
        format_ratio(row.ratio),
    ]


HEADER = ["area", "what", "reference", "robustlab", "reference's", "ratio"]


def text_table(rows: Sequence[Row]) -> str:
    """The table for the terminal: notes as numbered footnotes below it."""
    footnotes: dict[str, int] = {}
    lines = []
    cells = []
    for row in rows:
        mark = ""
        if row.note:
            mark = f"[{footnotes.setdefault(row.note, len(footnotes) + 1)}]"
        cells.append([*_cells(row), mark])
    header = [*HEADER, "note"]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    right = {3, 4, 5}

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines.append(line(header))
    lines.append("-" * len(line(header)))
    previous = None
    for row, values in zip(rows, cells, strict=True):
        if previous is not None and row.area != previous:
            lines.append("")
        previous = row.area
        lines.append(line(values))
    lines.append("-" * len(line(header)))
    lines.append(
        "ratio > 1.0: robustlab is better (faster, or less memory): robustlab's img/s over the "
        "reference's; for seconds and MiB, the reference's over robustlab's"
    )
    for note, number in footnotes.items():
        lines.append(f"[{number}] {note}")
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """The table in Markdown, notes inline."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = [
        "| " + " | ".join([*HEADER, "note"]) + " |",
        "| " + " | ".join(["---", "---", "---", "---:", "---:", "---:", "---"]) + " |",
    ]
    out += ["| " + " | ".join(esc(c) for c in [*_cells(r), r.note]) + " |" for r in rows]
    return "\n".join(out)


def run_benchmark(
    bench: Benchmark, quick: bool, threads: int, work: Path, env: Mapping[str, str], verbose: bool
) -> Outcome:
    """Run one benchmark script with ``--json`` into ``work``; parse what it wrote."""
    args = (bench.quick if quick else bench.full).split()
    child_env = dict(env)
    if bench.threads_flag:
        args += ["--threads", str(threads)]
    elif bench.threads_env:
        child_env["OMP_NUM_THREADS"] = str(threads)
    if bench.area == "strategies":
        try:
            args += ["--only", *compared_strategies()]
        except (subprocess.CalledProcessError, ValueError, IndexError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            return Outcome(bench.area, [bench.script], error=f"no strategy list: {detail[-500:]}")
    if bench.area == "ray" and quick:
        args += ["--study", str(quick_study(work, epochs=2))]
    if bench.area == "sweep" and quick:
        args += ["--config", str(quick_study(work))]
    target = work / f"{bench.area}.json"
    log = work / f"{bench.area}.log"
    command = [sys.executable, str(BENCHMARKS / bench.script), *args, "--json", str(target)]
    outcome = Outcome(bench.area, command[1:], log=str(log), load_before=_load())
    began = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for text in process.stdout:
            sink.write(text)
            if verbose:
                print(f"    {text}", end="", flush=True)
        outcome.returncode = process.wait()
    outcome.seconds = time.perf_counter() - began
    outcome.load_after = _load()
    if outcome.returncode != 0:
        text = log.read_text()
        tail = text.strip().splitlines()[-15:]
        outcome.error = f"exit status {outcome.returncode}:\n      " + "\n      ".join(tail)
        if "ModuleNotFoundError" in text:
            outcome.error += "\n      (a peer is missing: rerun bash benchmarks/setup_peers.sh)"
    elif not target.is_file():
        outcome.error = f"wrote no {target.name}"
    else:
        outcome.data = json.loads(target.read_text())
    return outcome


def quick_study(work: Path, epochs: int | None = None) -> Path:
    """The quickstart cut to one trial for ``--quick`` (and to ``epochs`` epochs if given).

    With the quickstart's epochs the sweep reuses its cached model; the Ray comparison gets 2
    epochs, so that its cold runs still train, briefly.
    """
    import yaml

    config = yaml.safe_load((REPO / "src/robustlab/configs/quickstart.yaml").read_text())
    config["name"] = "quickstart-quick"
    config["trials"] = 1
    if epochs is not None:
        config["models"][0]["epochs"] = [epochs]
    suffix = "" if epochs is None else f"-{epochs}epochs"
    path = work / f"quickstart-1trial{suffix}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BY_AREA),
        metavar="AREA",
        help=f"run only these benchmarks ({', '.join(BY_AREA)})",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every benchmark but the Ray one (default 1: steady on a shared "
        "machine)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write it as Markdown")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep every benchmark's JSON and log in this folder (default: a temporary folder, "
        "removed unless a benchmark failed)",
    )
    parser.add_argument("--verbose", action="store_true", help="show each benchmark's output")
    args = parser.parse_args(argv)
    selected = [b for b in BENCHMARKS_RUN if not args.only or b.area in args.only]

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    shared = REPO.parent / "shared" / "datasets"
    if "ROBUSTLAB_DATA" not in env and shared.is_dir():
        env["ROBUSTLAB_DATA"] = str(shared)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="robustlab-suite-"))

    info = machine()
    load = " ".join(f"{v:.2f}" for v in info["load_average"]) or "?"
    print(
        f"robustlab performance suite | {info['date']} | {'quick' if args.quick else 'full'} "
        f"| robustlab {info['robustlab']} ({info['commit']})"
    )
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu']}) | torch {info['torch']} | python "
        f"{info['python']} | load average {load} | torch threads {args.threads} (Ray: its own)"
    )
    print(f"data: {env.get('ROBUSTLAB_DATA', '(default data folder)')} | work folder: {work}")
    began = time.perf_counter()
    outcomes: list[Outcome] = []
    for number, bench in enumerate(selected, 1):
        print(f"[{number}/{len(selected)}] {bench.area}: {bench.summary} ...", flush=True)
        try:
            outcome = run_benchmark(bench, args.quick, args.threads, work, env, args.verbose)
        except Exception as err:  # the suite goes on; the failure is reported at the end
            outcome = Outcome(bench.area, [bench.script], error=f"{type(err).__name__}: {err}")
        outcomes.append(outcome)
        status = "done" if not outcome.error else f"FAILED ({outcome.error})"
        print(f"      {status} in {outcome.seconds:.0f} s", flush=True)
    total = time.perf_counter() - began

    done = {o.area: o for o in outcomes if not o.error}
    rows = build_table(
        {a: o.data for a, o in done.items()},
        {a: o.command for a, o in done.items()},
        {a: o.load_after for a, o in done.items() if o.load_after is not None},
    )
    print()
    print(text_table(rows))
    print()
    print("benchmark      seconds  load before -> after  command")
    for o in outcomes:
        before = "?" if o.load_before is None else f"{o.load_before:.2f}"
        after = "?" if o.load_after is None else f"{o.load_after:.2f}"
        flag = "" if not o.error else "  FAILED"
        command = " ".join(
            Path(o.command[0]).name if i == 0 else a for i, a in enumerate(o.command)
        )
        command = command.split(" --json ")[0]
        print(f"{o.area:<13}{o.seconds:>8.0f}  {before:>11} -> {after:<6}  {command}{flag}")
    print(f"suite wall time: {total:.0f} s ({total / 60:.1f} min)")
    below = [r for r in rows if r.ratio < 1]
    if below:
        print(f"ratios below 1.0: {len(below)} of {len(rows)}, each with its note above")
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"FAILED: {o.area} ({o.log})")

    payload = {
        "machine": info,
        "mode": "quick" if args.quick else "full",
        "threads": args.threads,
        "seconds": total,
        "benchmarks": [
            {
                "area": o.area,
                "command": o.command,
                "seconds": o.seconds,
                "returncode": o.returncode,
                "load_before": o.load_before,
                "load_after": o.load_after,
                "error": o.error,
            }
            for o in outcomes
        ],
        "rows": [r.as_dict() for r in rows],
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        head = (
            f"robustlab performance suite, {info['date']}, {payload['mode']} run, "
            f"robustlab {info['robustlab']} ({info['commit']}), {info['cpus']} CPUs "
            f"({info['cpu']}), torch {info['torch']}, load average {load} at the start, "
            f"suite wall time {total:.0f} s\n\n"
        )
        args.markdown.write_text(head + markdown_table(rows) + "\n")
        print(f"wrote {args.markdown}")
    if args.keep is None and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
