"""The data of a study: its dataset with the configured limits, and that data's fingerprint.

Kept apart from the runner so that a Ray worker can rebuild a study's data without importing
the runner's report and plotting.

Example:
    >>> from robustlab.study.config import parse_config
    >>> config = parse_config({"name": "t", "dataset": {"name": "mnist-sample",
    ...     "test_limit": 10}, "models": [{"name": "m", "architecture": "lin2022_cnn"}]})
    >>> len(prepare_dataset(config, None).test)
    10
"""

from __future__ import annotations

import os
from dataclasses import replace

from robustlab.data.base import Dataset
from robustlab.data.datasets import load_dataset
from robustlab.seeding import derive_seed
from robustlab.study.config import StudyConfig


def prepare_dataset(config: StudyConfig, data_dir: str | os.PathLike[str] | None) -> Dataset:
    """Load the study's dataset with its parameters and apply its train / test limits.

    Streamed splits (:class:`~robustlab.data.streaming.StreamingSplit`) stay streamed: a limit
    keeps the first files, nothing is decoded here.
    """
    dataset = load_dataset(
        config.dataset.name,
        data_dir=str(data_dir) if data_dir else None,
        **config.dataset.params,
    )
    return replace(
        dataset,
        train=dataset.train.subset(config.dataset.train_limit),
        test=dataset.test.subset(config.dataset.test_limit),
    )


def data_fingerprint(dataset: Dataset) -> str:
    """One fingerprint for the exact train and test data of a run."""
    return str(derive_seed(dataset.train.fingerprint(), dataset.test.fingerprint()))
