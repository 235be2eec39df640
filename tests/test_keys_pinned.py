"""Every shipped study keeps its cell keys and model-cache keys: old results and caches stay valid.

A key is what decides whether a stored result or a cached model is reused. The digests below
were recorded from the shipped configs (the keys of the studies that existed before the
training-strategies refactor were checked identical to those before it). A change here means
every user's stored results (or cached models) of that study would be recomputed: make it
only on purpose, and then record the new digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from robustlab.study.config import load_configs
from robustlab.study.parts.base import study_parts
from robustlab.study.plan import plan_models
from robustlab.study.runner import builtin_config
from robustlab.train.cache import ModelCache

#: config -> study -> (number of cell keys, digest of the sorted cell keys, digest of the keys
#: of the models trained from scratch; children's keys are inside their cells' keys).
PINNED: dict[str, dict[str, tuple[int, str, str]]] = {
    "quickstart": {"quickstart": (57, "bc00db54b966d50a", "8e9d3ee910a4bcd2")},
    "papers/lin2022": {"lin2022": (90, "43df05b1e1c1c6b4", "c1083bcbf1867d51")},
    "papers/aghdam2016-noise": {"aghdam2016-noise": (13, "35dbdf7489d0894b", "3dabcd4fc11f6197")},
    "papers/aghdam2016-min-noise": {
        "aghdam2016-min-noise": (3, "0c8c6d39c48645ef", "96a721f09658f970")
    },
    "papers/ghosh2018-compression": {
        "ghosh2018-mnist": (195, "4b622c3038b7247e", "d649b7ecc73846f1"),
        "ghosh2018-fashion": (195, "24fe0e212920b887", "0ab0c989ac075cf8"),
    },
    "papers/huang2021-pgd": {"huang2021-pgd": (129, "c4047ec4b17590f4", "da406f034422f975")},
    "papers/cavey-ablation": {
        "cavey-ablation": (6, "a2fbb6f592576eae", "976e57499dda0ffe"),
        "cavey-ablation-cifar10": (6, "f72ea57c2629218b", "4fbc50f6cb36866d"),
    },
    "papers/madry-pgd-mnist": {"madry-pgd-mnist": (18, "3206939de157bc6b", "6cb2d8ec8c727c87")},
    "papers/aghdam2016-augmentation": {
        "aghdam2016-augmentation": (30, "ea04d9e4b9f71514", "f09a32a032927045")
    },
    "papers/aghdam2016-ensemble": {
        "aghdam2016-ensemble": (105, "8f51eff015164863", "518121c4dfcc1a66"),
        "aghdam2016-ensemble-attacks": (49, "400b0e6e9ef98933", "518121c4dfcc1a66"),
    },
    "papers/ghosh2018-strategies": {
        "ghosh2018-strategies-mnist": (36, "85d666001310c15a", "7e6b312e4c968f4b"),
        "ghosh2018-strategies-fashion": (36, "6caf5cbcabd53c58", "98049d5148976489"),
    },
    "papers/cavey-strategies": {
        "cavey-strategies-mnist": (110, "d8a5b5b1a664b2bd", "7bd5a7236671a133"),
        "cavey-strategies-fashion": (110, "ead95ac87b93647f", "7bfb360436de7df8"),
    },
    "papers/cavey-strategies-matched": {
        "cavey-strategies-matched-mnist": (133, "52512dc42ecf3307", "8db4289431edbc8c")
    },
    "papers/cavey-strategies-full": {
        "cavey-strategies-full-mnist": (18634, "877aec146e260495", "e5bd423fe3e668b5"),
        "cavey-strategies-full-fashion": (18634, "cf4e633304385820", "4fdddbc6c77c2507"),
    },
    "papers/ghosh2018-master-slave": {
        "ghosh2018-master-slave-mnist": (198, "5380cce003720f3b", "424a26cb25b6c52d"),
        "ghosh2018-master-slave-mnist-attacks": (63, "94f7fd2e71965b32", "424a26cb25b6c52d"),
        "ghosh2018-master-slave-fashion": (198, "103f614274c02416", "741659a04ff97edd"),
        "ghosh2018-master-slave-fashion-attacks": (63, "54b362de188ffa9b", "741659a04ff97edd"),
        "ghosh2018-master-slave-joint-mnist": (132, "5a7ce9ab921dbc75", "424a26cb25b6c52d"),
    },
    "papers/lin2022-adaptive-filter": {
        "lin2022-adaptive-filter": (170, "8bd773db934cc97a", "2781dec1701be095"),
        "lin2022-adaptive-filter-attacks": (20, "0db457d13a2d82af", "2781dec1701be095"),
    },
    "presets/mnist": {"preset-mnist": (26, "4a3137f07b3facd4", "96a721f09658f970")},
    "presets/fashion-mnist": {"preset-fashion-mnist": (26, "26e95d14e9daa58a", "d96154671bc8cfb6")},
    "presets/cifar10": {"preset-cifar10": (26, "16b5b09b67ccb060", "8c1f38e03634a133")},
    "presets/svhn": {"preset-svhn": (26, "f1411c116b172ea1", "eedf9a63a8aa27af")},
    "presets/gtsrb": {"preset-gtsrb": (26, "dc563c266a14c7cc", "5b03a0ecd9949694")},
}


def _part_keys(plan: Any) -> list[str]:
    jobs = plan.cells if hasattr(plan, "cells") else plan
    return [job.key for job in jobs]


def _digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def study_keys(name: str, tmp: str) -> dict[str, tuple[int, str, str]]:
    """(cell count, cell-key digest, model-key digest) of every study of a shipped config."""
    out = {}
    cache = ModelCache(tmp)
    for config in load_configs(builtin_config(name)):
        models = plan_models(config)
        cells: list[str] = []
        for part in study_parts():
            plan = part.plan(config, "fingerprint", [m for m in models if m.evaluated])
            if plan is not None:
                cells += _part_keys(plan)
        model_keys = [
            f"{m.id}={cache.key(m.recipe, 'fingerprint')}"
            for m in models
            if m.recipe is not None and not m.parents
        ]
        out[config.name] = (len(set(cells)), _digest(cells), _digest(model_keys))
    return out


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_studies_keep_their_cell_and_model_keys(name: str, tmp_path: Any) -> None:
    assert study_keys(name, str(tmp_path)) == PINNED[name], (
        f"the keys of configs/{name}.yaml changed: every stored result or cached model of it "
        "would be recomputed; if that is intended, record the new digests in PINNED"
    )
