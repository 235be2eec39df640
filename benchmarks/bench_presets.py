"""Training and evaluation cost of every preset study's model, for the figures in its header.

CIFAR-10, SVHN and GTSRB are not on the development machines, so the cost of a preset cannot be
read off a real run there. It does not depend on the pixels, only on the architecture, the
image size, the batch size and the optimiser. For every ``configs/presets/*.yaml`` this script
builds the preset's model exactly as a study would (``TrainingRecipe`` from the config), then
times, on random images of the dataset's shape:

- one training pass over ``--train-images`` images with the preset's batch size and optimiser
  (the production ``train_epochs``), after a warm-up of a few batches;
- inference over ``--eval-images`` images with the preset's evaluation batch size (the forward
  pass a study cell runs, under ``torch.inference_mode``).

and extrapolates to the real dataset sizes: one epoch, all epochs, and one pass over the test
set (a study makes one pass per cell and defence; degradation and filter costs come on top,
see ``bench_sweep.py``).

Run: ``python benchmarks/bench_presets.py [--device auto] [--only cifar10 gtsrb] [--json PATH]``
(about 2-4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from robustlab.data.base import Split
from robustlab.device import resolve_device, tune_cpu_allocator
from robustlab.study.config import load_config
from robustlab.study.plan import make_plan
from robustlab.train.loop import build_model, make_optimizer, train_epochs

PRESETS = Path(__file__).resolve().parents[1] / "src" / "robustlab" / "configs" / "presets"

# Official split sizes and image shapes (GTSRB at the loader's default 48x48).
DATASETS = {
    "mnist": ((1, 28, 28), 60_000, 10_000, 10),
    "fashion-mnist": ((1, 28, 28), 60_000, 10_000, 10),
    "cifar10": ((3, 32, 32), 50_000, 10_000, 10),
    "svhn": ((3, 32, 32), 73_257, 26_032, 10),
    "gtsrb": ((3, 48, 48), 39_209, 12_630, 43),
}


def _random_split(shape: tuple[int, int, int], n: int, classes: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return Split(pixels, torch.randint(0, classes, (n,), generator=g))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_preset(name: str, device: torch.device, train_images: int, eval_images: int) -> dict:
    """Seconds per image for training and inference of preset ``name``'s first model."""
    config = load_config(PRESETS / f"{name}.yaml")
    shape, train_size, test_size, classes = DATASETS[config.dataset.name]
    recipe = make_plan(config, "timing").models[0].recipe
    assert recipe is not None
    epochs = recipe.epochs
    recipe = recipe.model_copy(update={"epochs": 1})
    model = build_model(recipe).to(device)
    optimizer = make_optimizer(recipe, model)

    warm = _random_split(shape, 4 * recipe.batch_size, classes, 1)
    train_epochs(model, optimizer, warm, recipe, start_epoch=0, end_epoch=1)
    split = _random_split(shape, train_images, classes, 2)
    _sync(device)
    began = time.perf_counter()
    train_epochs(model, optimizer, split, recipe, start_epoch=0, end_epoch=1)
    _sync(device)
    train_s = (time.perf_counter() - began) / train_images

    model.eval()
    test = _random_split(shape, eval_images, classes, 3)
    batches = [x for x, _ in test.batches(config.batch_size, device)]
    with torch.inference_mode():
        model(batches[0])
        _sync(device)
        began = time.perf_counter()
        for x in batches:
            model(x).argmax(dim=1)
        _sync(device)
    eval_s = (time.perf_counter() - began) / eval_images
    return {
        "preset": name,
        "architecture": recipe.architecture,
        "batch_size": recipe.batch_size,
        "epochs": epochs,
        "train_ms_per_image": 1e3 * train_s,
        "epoch_s": train_s * train_size,
        "training_min": train_s * train_size * epochs / 60,
        "eval_ms_per_image": 1e3 * eval_s,
        "test_pass_s": eval_s * test_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="+", choices=sorted(DATASETS))
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--eval-images", type=int, default=4000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tune_cpu_allocator()  # as the robustlab command does
    device = resolve_device(args.device)
    load = os.getloadavg()
    print(
        f"torch {torch.__version__} | device {device} | threads {torch.get_num_threads()} | "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    header = (
        f"{'preset':<14} {'architecture':<18} {'batch':>5} {'train ms/img':>12} "
        f"{'epoch s':>8} {'epochs':>6} {'train min':>9} {'eval ms/img':>11} {'test pass s':>11}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.only or sorted(DATASETS):
        row = time_preset(name, device, args.train_images, args.eval_images)
        rows.append(row)
        print(
            f"{name:<14} {row['architecture']:<18} {row['batch_size']:>5} "
            f"{row['train_ms_per_image']:>12.2f} {row['epoch_s']:>8.0f} {row['epochs']:>6} "
            f"{row['training_min']:>9.1f} {row['eval_ms_per_image']:>11.3f} "
            f"{row['test_pass_s']:>11.1f}"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
