"""The Ray executor against the local executor on the same study: wall time and overheads.

Runs one study (default: the quickstart, one 15-epoch training and 57 cells on the embedded
MNIST sample) four ways, each in a fresh Python process with an empty run directory:

- local, cold: an empty model cache (the training is timed too);
- local, warm: the trained model cached (evaluation only);
- Ray on a private cluster of ``--cpus`` CPUs, cold and warm the same way.

Ray's overhead is then split into its parts, all measured in this run: the start-up (a private
cluster started, one task importing what a shard's worker imports, shut down; timed alone after
the driver's own imports, and printed in those three parts), the overhead per cell (warm Ray
minus warm local minus the start-up, per shard task) and the overhead per training (the
difference of the cold-minus-warm times, per training). The results of the four runs are
compared: ``results.csv`` must be identical (``--cpus-per-training`` equal to ``--cpus`` makes
Ray train on as many threads as the local run).

Run:
    python benchmarks/bench_ray.py [--study quickstart] [--cpus 2] [--cpus-per-task 1]
        [--cpus-per-training 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

_RUN = textwrap.dedent(
    """
    import json, sys, time
    from robustlab.device import tune_cpu_allocator
    from robustlab.study.executor_config import ExecutorConfig
    from robustlab.study.runner import run_study
    from robustlab.train.cache import ModelCache

    args = json.loads(sys.argv[1])
    tune_cpu_allocator()
    began = time.perf_counter()
    result = run_study(
        args["study"], run_dir=args["run_dir"], cache=ModelCache(args["cache"]),
        executor=ExecutorConfig(**args["executor"]),
    )
    print(json.dumps({
        "seconds": time.perf_counter() - began, "cells": result.cells_run,
        "trained": result.trained, "csv": str(result.results_csv),
    }))
    """
)

_STARTUP = textwrap.dedent(
    """
    import json, sys, time
    from robustlab.study.executor_config import ExecutorConfig
    from robustlab.study.ray_executor import ray_cluster

    # The driver's own imports are outside the timing: the study runs time run_study alone.
    began = time.perf_counter()
    with ray_cluster(ExecutorConfig(name="ray", cpus=int(sys.argv[1]))) as ray:
        started = time.perf_counter()

        @ray.remote(num_cpus=1)
        def first_task():
            import robustlab.study.ray_executor  # what a shard's worker imports first

        ray.get(first_task.remote())
        first = time.perf_counter()
    ended = time.perf_counter()
    print(json.dumps({
        "seconds": ended - began, "init": started - began, "first_task": first - started,
        "shutdown": ended - first,
    }))
    """
)


def _python(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _run(
    study: str, root: Path, name: str, cache: Path, executor: dict[str, Any]
) -> dict[str, Any]:
    args = {"study": study, "run_dir": str(root / name), "cache": str(cache), "executor": executor}
    return _python(_RUN, json.dumps(args))


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="quickstart", help="study file or built-in name")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of both executors")
    parser.add_argument("--cpus-per-task", type=int, default=1)
    parser.add_argument("--cpus-per-training", type=int, default=None, help="default: --cpus")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    training_cpus = args.cpus_per_training or args.cpus
    local = {"name": "local", "cpus": args.cpus}
    ray = {
        "name": "ray",
        "cpus": args.cpus,
        "cpus_per_task": args.cpus_per_task,
        "cpus_per_training": training_cpus,
    }
    print(
        f"study {args.study} | {args.cpus} CPUs | ray tasks {args.cpus_per_task} CPU, trainings "
        f"{training_cpus} | load average {os.getloadavg()[0]:.2f} | {time.strftime('%Y-%m-%d')}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder:
        root = Path(folder)
        runs = {
            "local cold": _run(args.study, root, "lc", root / "cache-local", local),
            "local warm": _run(args.study, root, "lw", root / "cache-local", local),
            "ray cold": _run(args.study, root, "rc", root / "cache-ray", ray),
            "ray warm": _run(args.study, root, "rw", root / "cache-ray", ray),
        }
        parts = _python(_STARTUP, str(args.cpus))
        startup = parts["seconds"]
        csvs = {name: Path(run["csv"]).read_text() for name, run in runs.items()}
    identical = len(set(csvs.values())) == 1
    trainings = len(runs["local cold"]["trained"])
    cells = runs["local cold"]["cells"]
    print(f"{'run':<12}{'seconds':>10}{'ratio':>8}   trained, cells")
    for name, run in runs.items():
        base = runs["local cold" if "cold" in name else "local warm"]["seconds"]
        print(
            f"{name:<12}{run['seconds']:>10.1f}{run['seconds'] / base:>7.2f}x   "
            f"{len(run['trained'])}, {run['cells']}"
        )
    per_cell = (runs["ray warm"]["seconds"] - runs["local warm"]["seconds"] - startup) / cells
    training_gap = (runs["ray cold"]["seconds"] - runs["ray warm"]["seconds"]) - (
        runs["local cold"]["seconds"] - runs["local warm"]["seconds"]
    )
    print(
        f"ray start-up and shut-down (private cluster, one task): {startup:.1f} s = ray.init "
        f"{parts['init']:.1f} s + first task (a worker starts and imports robustlab) "
        f"{parts['first_task']:.1f} s + shut-down {parts['shutdown']:.1f} s (in a study it "
        "overlaps the report)"
    )
    print(f"ray overhead per cell (shard task): {per_cell * 1000:.0f} ms")
    if trainings:
        print(f"ray overhead per training: {training_gap / trainings:.1f} s")
    print(f"results.csv identical across the four runs: {identical}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "runs": runs,
                    "startup": startup,
                    "startup_parts": parts,
                    "per_cell": per_cell,
                    "per_training": training_gap / max(trainings, 1),
                    "identical": identical,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
