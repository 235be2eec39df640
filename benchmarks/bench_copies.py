"""Monte-Carlo sweep cost: the aghdam2016 sweep against pure inference, and peak memory.

aghdam2016 evaluates 150 noisy copies of every MNIST test image at each of 12 noise levels
(18 million forward passes). This benchmark plans ``configs/papers/aghdam2016-noise.yaml``
exactly as ``robustlab run`` does (the clean setting and the 12 sigmas, PSNR / SSIM on, two
copies recorded, batch 2,000) with ``copies`` overridden, runs every group through the
production ``evaluate_group``, and measures in the same process the floor: ``model(x)`` alone
on as many clean test images. Each number of copies runs in a fresh subprocess, so that peak
memory is its own. Per run it prints:

- the sweep's seconds, the floor's seconds and their ratio (target: <= 1.3);
- the process's peak resident memory, which must not grow with the number of copies (the
  executor streams copies; it never materialises the degraded set);
- with ``--images-grid``, the same sweep (at the fewest copies, with batches of the smallest
  number of images, so that every run's batches are full and cost the same activations) on
  more and more test images, and the peak memory of the sweep alone (read before the floor
  materialises its batches): it
  may grow by the test set itself (``uint8``, 784 bytes an MNIST digit) and the recorded
  copies' per-sample arrays, not by the degraded images, which are streamed batch by batch.

Run: ``python benchmarks/bench_copies.py [--copies 4 16 64] [--images 2000]
[--images-grid 1000 10000] [--device auto]``.
The test images are the real MNIST test set when the data directory (``--data-dir`` or
``$ROBUSTLAB_DATA``) has it, else the embedded ``mnist-sample`` (1,000 images). The network is
the study's architecture, untrained: inference costs the same as for the trained one (the
Monte-Carlo counters do not depend on the predictions), so the ratio and memory figures hold.
About 6 minutes on 2 CPU cores with the defaults (sweep and floor of 1.6 million images at 64
copies); ``--images 10000 --copies 150`` is the paper's whole sweep (18 million, about an hour).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

TARGET_RATIO = 1.3


def _one_run(
    copies: int, images: int, device_name: str, data_dir: str | None, batch: int | None = None
) -> dict[str, float]:
    from robustlab.data.base import Split
    from robustlab.data.datasets import load_dataset
    from robustlab.defend import create_defense
    from robustlab.device import resolve_device, tune_cpu_allocator
    from robustlab.errors import RobustlabError
    from robustlab.study.config import load_config
    from robustlab.study.executor import evaluate_group
    from robustlab.study.plan import make_plan
    from robustlab.study.runner import builtin_config
    from robustlab.train.loop import build_model

    tune_cpu_allocator()  # as the robustlab command does; sweep and floor both benefit
    device = resolve_device(device_name)
    config = load_config(builtin_config("papers/aghdam2016-noise"))
    config = config.model_copy(update={"copies": copies, "batch_size": batch or config.batch_size})
    try:
        dataset = load_dataset("mnist", data_dir=data_dir)
    except RobustlabError:
        dataset = load_dataset("mnist-sample")
    test = dataset.test.subset(images)
    test = Split(test.images, test.labels)
    plan = make_plan(config, "bench")
    recipe = plan.models[0].recipe
    assert recipe is not None
    model = build_model(recipe).to(device).eval()
    defenses = {d.label: create_defense(d.name, **d.params).to(device) for d in plan.defenses}
    num_classes = len(dataset.classes)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def sweep(groups: list, split: Split, copies_cap: int | None = None) -> int:
        evaluated = 0
        for group in groups:
            group_copies = group.copies if copies_cap is None else min(group.copies, copies_cap)
            evaluate_group(
                model,
                group,
                split,
                num_classes,
                batch_size=config.batch_size,
                device=device,
                defenses=defenses,
                copies=group_copies,
                quality=config.quality_metrics,
                record_copies=min(config.records, group_copies),
            )
            evaluated += len(split) * group_copies * len(group.cells)
        return evaluated

    sweep(plan.groups[:2], Split(test.images[:64], test.labels[:64]), copies_cap=1)  # warm-up
    sync()
    began = time.perf_counter()
    evaluated = sweep(plan.groups, test)
    sync()
    sweep_s = time.perf_counter() - began
    peak_sweep_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    batches = [x for x, _ in test.batches(config.batch_size, device)]
    passes = evaluated // len(test)
    with torch.inference_mode():
        sync()
        began = time.perf_counter()
        for _ in range(passes):
            for x in batches:
                model(x).argmax(dim=1)
        sync()
    inference_s = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "dataset": dataset.name,
        "copies": copies,
        "groups": len(plan.groups),
        "images": evaluated,
        "sweep_s": sweep_s,
        "inference_s": inference_s,
        "ratio": sweep_s / inference_s,
        "peak_rss_mib": peak_mib,
        "peak_rss_sweep_mib": peak_sweep_mib,
        "test_images": len(test),
        "test_set_mib": test.images.numel() / 2**20,
    }


def _child(
    copies: int, images: int, args: argparse.Namespace, batch: int | None = None
) -> dict[str, Any]:
    """One run in a fresh process, so that its peak memory is its own."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(copies),
            "--images",
            str(images),
            *(["--batch", str(batch)] if batch else []),
            "--device",
            args.device,
            *(["--data-dir", args.data_dir] if args.data_dir else []),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument(
        "--images-grid",
        type=int,
        nargs="*",
        default=[],
        help="also sweep these numbers of test images (at the fewest copies): peak memory",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_one_run(args.child, args.images, args.device, args.data_dir, args.batch)))
        return

    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | device {args.device}")
    print(
        f"{'copies':>7} {'images':>9} {'sweep s':>9} {'infer s':>9} {'ratio':>6} "
        f"{'peak RSS MiB':>13}"
    )
    rows = []
    for copies in args.copies:
        row = _child(copies, args.images, args)
        rows.append({**row, "series": "copies"})
        print(
            f"{row['copies']:>7} {row['images']:>9,} {row['sweep_s']:>9.2f} "
            f"{row['inference_s']:>9.2f} {row['ratio']:>6.2f} {row['peak_rss_mib']:>13.0f}"
        )
    samples = []
    if args.images_grid:
        print(f"\n{'test images':>11} {'copies':>7} {'sweep s':>9} {'sweep peak RSS MiB':>19}")
        for images in args.images_grid:
            # One batch size for the series, no larger than its fewest images: activations
            # then cost the same in every run and only what grows with the images shows.
            row = _child(min(args.copies), images, args, batch=min(args.images_grid))
            samples.append({**row, "series": "images"})
            print(
                f"{row['test_images']:>11,} {row['copies']:>7} {row['sweep_s']:>9.2f} "
                f"{row['peak_rss_sweep_mib']:>19.0f}"
            )
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    most = rows[-1]["ratio"]  # the run closest to the paper's 150 copies
    print(f"test images: {rows[0]['dataset']}, {args.images:,} | groups: {rows[0]['groups']}")
    print(
        f"peak memory, most copies / fewest copies: {growth:.2f}x "
        f"({rows[-1]['copies'] / rows[0]['copies']:.0f}x the copies)"
    )
    verdict = "meets" if most <= TARGET_RATIO else "MISSES"
    print(
        f"ratio sweep / pure inference at {rows[-1]['copies']} copies: {most:.2f}x "
        f"({verdict} the {TARGET_RATIO}x target; the paper's sweep has 150)"
    )
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        print(
            f"sweep peak memory, {last['test_images']:,} test images / {first['test_images']:,}: "
            f"{last['peak_rss_sweep_mib'] / first['peak_rss_sweep_mib']:.2f}x "
            f"({last['test_images'] / first['test_images']:.0f}x the images; the test set "
            f"itself grows from {first['test_set_mib']:.1f} to {last['test_set_mib']:.1f} MiB)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows + samples, indent=2))


if __name__ == "__main__":
    main()
