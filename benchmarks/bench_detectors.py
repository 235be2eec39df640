"""Adaptive filter selection: the CNN kind detector against statistical detectors.

Issue 12 asks for the adaptive filter's detector to be "a small CNN on the study's degradation
families, or a statistical detector if it measures as well; report which and why". This
measures both on the setting of ``configs/papers/lin2022-adaptive-filter.yaml``: kinds clean,
impulse (salt and pepper 0.05-0.4), Gaussian noise (sigma 0.1-0.5) and JPEG (quality 5-30).

- **cnn**: the study's ``kind-e3`` detector (``ghosh2018_quality``, 3 epochs of the ``quality``
  strategy), served from the model cache (trained on first use, about 2 minutes).
- **statistics**: robustlab's ``degradation_statistics`` (eight per-image statistics, see
  :mod:`robustlab.models.degradation_statistics`, and a 32-unit classifier), trained by the
  same recipe as ``kind-e3`` (learning rate 0.01), from the model cache;
- **logistic** and **boosted**: the same eight statistics, standardised, then scikit-learn's
  multinomial ``LogisticRegression`` or ``HistGradientBoostingClassifier`` (independent
  references for what the statistics can do), fitted on the training digits, each put into a
  kind drawn uniformly, as the strategy does (one draw per digit, not one per epoch).

Measured, on the first ``--images`` test digits put into each kind (the same images and draws
for every detector): detection accuracy per kind; then the errors of the whole adaptive filter
(detector, the filter of the detected kind, lin2022's CNN ``cnn-e10``) on lin2022's mixed test
set (each digit clean, salt and pepper 0.1 / 0.3, Gaussian 0.2 / 0.4 or JPEG 10, drawn
uniformly) for ``--trials`` draws, with the *oracle* (each image's true kind) as the floor; and
each detector's time per 1,000 images. The kind-to-filter mapping is learned as the study does:
per kind, the candidate filter with the highest accuracy on the last 1,000 training digits.

Run (about 5 minutes at one thread once the models are cached; needs real MNIST):
    ROBUSTLAB_DATA=../shared/datasets python benchmarks/bench_detectors.py [--images 2000]
        [--trials 3] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from robustlab.data import load_dataset
from robustlab.defend import create_defense
from robustlab.degrade import create_degradation
from robustlab.models.adaptive_filter import AdaptiveFilter
from robustlab.models.degradation_statistics import image_statistics
from robustlab.paths import model_cache_dir
from robustlab.seeding import make_generator
from robustlab.study.config import StudyConfig, load_configs
from robustlab.study.plan import plan_models
from robustlab.train.bins import DegradationBins
from robustlab.train.cache import ModelCache

CONFIG = "src/robustlab/configs/papers/lin2022-adaptive-filter.yaml"
CANDIDATES: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("median", {"size": 3}),
    ("median", {"size": 5}),
    ("box", {"size": 3}),
    ("gaussian", {"sigma": 1.0}),
]
# lin2022-adaptive-filter's mixed test set: (setting, its kind).
MIXED: list[tuple[str, dict[str, Any], str]] = [
    ("none", {}, "clean"),
    ("salt_pepper", {"amount": 0.1}, "impulse"),
    ("salt_pepper", {"amount": 0.3}, "impulse"),
    ("gaussian_noise", {"sigma": 0.2}, "gaussian"),
    ("gaussian_noise", {"sigma": 0.4}, "gaussian"),
    ("jpeg", {"quality": 10}, "jpeg"),
]


class StatisticalDetector(nn.Module):
    """A fitted scikit-learn classifier on :func:`statistics_of`: log-probabilities per kind."""

    def __init__(self, classifier: Any) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = self.classifier.predict_proba(image_statistics(x).cpu().numpy())
        return torch.from_numpy(np.log(probabilities + 1e-12)).float().to(x.device)


def study_config() -> StudyConfig:
    return load_configs(Path(__file__).resolve().parents[1] / CONFIG)[0]


def served(model_id: str, dataset: Any, **change: Any) -> nn.Module:
    """A model of the study from the model cache (trained on first use), its recipe changed."""
    config = study_config()
    planned = next(m for m in plan_models(config) if m.id == model_id)
    assert planned.recipe is not None
    recipe = planned.recipe.model_copy(update=change)
    return ModelCache(model_cache_dir()).get_or_train(recipe, dataset).model.eval()


def bins_of_config() -> DegradationBins:
    config = study_config()
    kind = next(m for m in config.models if m.name == "kind")
    assert kind.strategy is not None
    return DegradationBins.from_spec(kind.strategy.params["bins"])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    hits = sum(
        int((model(x[i : i + batch]).argmax(dim=1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return hits / len(x)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]).argmax(dim=1) for i in range(0, len(x), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="test digits per kind")
    parser.add_argument("--trials", type=int, default=3, help="draws of the mixed test set")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset("mnist", data_dir=os.environ.get("ROBUSTLAB_DATA"))
    classifier, cnn = served("cnn-e10", dataset), served("kind-e3", dataset)
    # robustlab's statistical detector: kind-e3's recipe on the other architecture.
    statistics_net = served(
        "kind-e3", dataset, architecture="degradation_statistics", learning_rate=0.01
    )
    bins = bins_of_config()
    train_x, _ = next(dataset.train.batches(len(dataset.train)))
    test_x, test_y = next(dataset.test.batches(len(dataset.test)))
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | bins {bins.names}")

    began = time.perf_counter()
    degraded, kinds = bins.sample(train_x, make_generator(1))
    features = image_statistics(degraded).numpy()
    detectors: dict[str, nn.Module] = {"cnn": cnn, "statistics": statistics_net}
    for name, model in (
        ("logistic", LogisticRegression(max_iter=5000)),
        ("boosted", HistGradientBoostingClassifier(random_state=0)),
    ):
        fitted = make_pipeline(StandardScaler(), model).fit(features, kinds.numpy())
        detectors[name] = StatisticalDetector(fitted)
    print(f"statistical detectors fitted on {len(train_x):,} digits in "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip

    # Detection accuracy per kind, the same degraded images for every detector.
    x = test_x[: args.images]
    per_kind: dict[str, dict[str, float]] = {d: {} for d in detectors}
    timing: dict[str, float] = {}
    for k, item in enumerate(bins.bins):
        images = item.apply(x, make_generator(100 + k))
        truth = torch.full((len(images),), k)
        for name, detector in detectors.items():
            per_kind[name][item.name] = accuracy(detector, images, truth)
    for name, detector in detectors.items():
        runs = []
        for _ in range(3):
            began = time.perf_counter()
            predict(detector, x)
            runs.append(time.perf_counter() - began)
        timing[name] = 1000 * min(runs) / len(x)
    print(f"\ndetection accuracy on {len(x):,} test digits per kind (%), seconds per 1,000 images")
    print(f"{'detector':<10}" + "".join(f"{n:>10}" for n in bins.names) + f"{'mean':>8}{'s/1k':>8}")
    for name in detectors:
        values = [100 * per_kind[name][n] for n in bins.names]
        print(
            f"{name:<10}" + "".join(f"{v:>10.2f}" for v in values)
            + f"{statistics.mean(values):>8.2f}{timing[name]:>8.3f}"
        )  # fmt: skip

    # The mapping kind -> filter, learned as the study does (last 1,000 training digits).
    holdout_x, holdout_y = next(dataset.train.batches(len(dataset.train)))
    holdout_x, holdout_y = holdout_x[-1000:], holdout_y[-1000:]
    filters = []
    for item in bins.bins:
        images = item.apply(holdout_x, make_generator(200 + bins.index(item.name)))
        scores = [
            accuracy(nn.Sequential(create_defense(n, **p), classifier), images, holdout_y)
            for n, p in CANDIDATES
        ]
        best = CANDIDATES[int(np.argmax(scores))]
        filters.append(create_defense(best[0], **best[1]))
        print(f"mapping: {item.name} -> {best[0]} {best[1]}")

    # The whole pipeline on lin2022's mixed test set, with the oracle as the floor.
    errors: dict[str, list[int]] = {name: [] for name in [*detectors, "oracle", "median3"]}
    for trial in range(args.trials):
        generator = make_generator(300 + trial)
        setting = torch.randint(len(MIXED), (len(test_x),), generator=generator)
        mixed = test_x.clone()
        truth = torch.empty(len(test_x), dtype=torch.long)
        for s, (degradation, params, kind) in enumerate(MIXED):
            index = (setting == s).nonzero().flatten()
            if degradation != "none":
                step = create_degradation(degradation, **params)
                mixed[index] = step(test_x[index], generator)
            truth[index] = bins.index(kind)
        for name, detector in detectors.items():
            pipeline = AdaptiveFilter(detector, classifier, filters).eval()
            errors[name].append(int((predict(pipeline, mixed) != test_y).sum()))
        oracle = mixed.clone()
        for k, defense in enumerate(filters):
            index = (truth == k).nonzero().flatten()
            with torch.no_grad():
                oracle[index] = defense(mixed[index])
        errors["oracle"].append(int((predict(classifier, oracle) != test_y).sum()))
        median = nn.Sequential(create_defense("median", size=3), classifier)
        errors["median3"].append(int((predict(median, mixed) != test_y).sum()))
    print(f"\nerrors on lin2022's mixed test set ({len(test_x):,} digits, {args.trials} draws)")
    for name, found in errors.items():
        spread = statistics.stdev(found) if len(found) > 1 else 0.0
        print(f"{name:<10}{statistics.mean(found):>9.1f} ± {spread:.1f}   {found}")
    if args.json:
        args.json.write_text(
            json.dumps({"detection": per_kind, "ms_per_image": timing, "errors": errors}, indent=2)
        )


if __name__ == "__main__":
    main()
