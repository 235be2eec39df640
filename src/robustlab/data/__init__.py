"""Datasets: file readers, safe downloads and extraction, and the registry of named datasets.

Importing the package registers every dataset: the MNIST family (:mod:`.datasets`), CIFAR-10
(:mod:`.cifar10`), SVHN (:mod:`.svhn`), GTSRB (:mod:`.gtsrb`) and your own image folders
(:mod:`.folder`, ``folder:PATH``) and tensors (:mod:`.tensors`, ``tensors:PATH``).

Example:
    >>> from robustlab.data import DATASETS
    >>> DATASETS.names()
    ['cifar10', 'fashion-mnist', 'folder', 'gtsrb', 'mnist', 'mnist-sample', 'svhn', 'tensors']
"""

from robustlab.data import cifar10, datasets, folder, gtsrb, svhn, tensors
from robustlab.data.base import Dataset, Split, SplitLike
from robustlab.data.registry import DATASETS, check_dataset, load_dataset, resolve_dataset_name
from robustlab.data.streaming import StreamingSplit

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "SplitLike",
    "StreamingSplit",
    "check_dataset",
    "cifar10",
    "datasets",
    "folder",
    "gtsrb",
    "load_dataset",
    "resolve_dataset_name",
    "svhn",
    "tensors",
]
