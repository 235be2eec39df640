"""Monte-Carlo sweep cost: time against pure inference, and peak memory against copies.

aghdam2016 evaluates 150 noisy copies of every test image at each of 12 noise levels. This
benchmark runs the production ``evaluate_group`` on that workload (``gaussian_noise_255``,
PSNR / SSIM on, two copies recorded, as in ``configs/papers/aghdam2016-noise.yaml``) for several
numbers of copies, each in a fresh subprocess, and prints per run:

- the sweep's seconds and the seconds of pure inference (``model(x)`` on the same number of
  images, nothing else) measured in the same process, and their ratio (target: <= 1.3);
- the process's peak resident memory, which must not grow with the number of copies
  (the executor streams copies; it never materialises the degraded set).

Run: ``python benchmarks/bench_copies.py [--copies 5 20 80] [--images 1000] [--device auto]``.
It uses the aghdam2016 model from the model cache when it is there (train it once with
``robustlab run configs/papers/aghdam2016-noise.yaml``), else an untrained network of the same
architecture: inference costs the same, so the ratio and memory figures hold either way.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def _one_run(copies: int, images: int, device_name: str) -> dict[str, float]:
    from robustlab.data.base import Split
    from robustlab.data.datasets import load_dataset
    from robustlab.defend import create_defense
    from robustlab.device import resolve_device, tune_cpu_allocator
    from robustlab.models import create_model
    from robustlab.study.executor import evaluate_group
    from robustlab.study.plan import Cell, DefenseSetting, Group, PlannedModel, Setting
    from robustlab.train.loop import TrainingRecipe

    tune_cpu_allocator()  # as the robustlab command does; sweep and floor both benefit
    device = resolve_device(device_name)
    test = load_dataset("mnist-sample").test.subset(images)
    test = Split(test.images, test.labels)
    model = create_model("lin2022_cnn").to(device).eval()
    recipe = TrainingRecipe(architecture="lin2022_cnn", dataset="mnist")
    planned = PlannedModel("convnet-e10", "convnet", recipe)
    setting = Setting("gaussian_noise", "gaussian_noise_255", {"sigma": 8.0}, "sigma", 8.0, True)
    defense = DefenseSetting("none", "none", {})
    cell = Cell("k", planned, defense, setting, 0)
    group = Group(planned, setting, 0, 1234, (cell,), copies)
    defenses = {"none": create_defense("none")}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Warm-up, then the sweep.
    evaluate_group(
        model,
        group,
        test.subset(64),
        10,
        batch_size=2000,
        device=device,
        defenses=defenses,
        copies=1,
        record_copies=1,
    )
    sync()
    began = time.perf_counter()
    evaluate_group(
        model,
        group,
        test,
        10,
        batch_size=2000,
        device=device,
        defenses=defenses,
        copies=copies,
        quality=True,
        record_copies=min(2, copies),
    )
    sync()
    sweep = time.perf_counter() - began

    batches = [x for x, _ in test.batches(2000, device)]
    with torch.inference_mode():
        sync()
        began = time.perf_counter()
        for _ in range(copies):
            for x in batches:
                model(x).argmax(dim=1)
        sync()
    inference = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "copies": copies,
        "images": images * copies,
        "sweep_s": sweep,
        "inference_s": inference,
        "ratio": sweep / inference,
        "peak_rss_mib": peak_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[5, 20, 80])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_one_run(args.child, args.images, args.device)))
        return

    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | device {args.device}")
    print(
        f"{'copies':>7} {'images':>9} {'sweep s':>9} {'infer s':>9} {'ratio':>6} "
        f"{'peak RSS MiB':>13}"
    )
    rows = []
    for copies in args.copies:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(copies),
                "--images",
                str(args.images),
                "--device",
                args.device,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['copies']:>7} {row['images']:>9,} {row['sweep_s']:>9.2f} "
            f"{row['inference_s']:>9.2f} {row['ratio']:>6.2f} {row['peak_rss_mib']:>13.0f}"
        )
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(
        f"peak memory, most copies / fewest copies: {growth:.2f}x "
        f"({rows[-1]['copies'] / rows[0]['copies']:.0f}x the copies)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
