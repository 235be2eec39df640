"""Datasets: IDX readers, checksummed downloads and the registry of named datasets.

Example:
    >>> from robustlab.data import DATASETS
    >>> DATASETS.names()
    ['fashion-mnist', 'mnist', 'mnist-sample']
"""

from robustlab.data.base import Dataset, Split
from robustlab.data.datasets import DATASETS, load_dataset

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset"]
