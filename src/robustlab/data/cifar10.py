"""CIFAR-10 from the official binary release (``cifar-10-binary.tar.gz``), never the pickles.

The archive extracts to ``<data dir>/cifar-10-batches-bin/``: ``data_batch_1.bin`` ..
``data_batch_5.bin`` (training, 10,000 images each), ``test_batch.bin`` (10,000) and
``batches.meta.txt`` (the ten class names, one per line). A batch file is a sequence of
3,073-byte records: one label byte (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes of
a 32x32 image in row-major order. The Python version of the release is a set of pickles and
is deliberately not read (unpickling runs arbitrary code).

Missing files are obtained from a local ``<data dir>/cifar-10-binary.tar.gz`` or, when
downloading is allowed, from the official site (MD5-verified, extracted safely with
:mod:`robustlab.data.archive`).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> records = np.zeros((2, RECORD_BYTES), dtype=np.uint8)
    >>> records[:, 0] = [3, 7]
    >>> _ = (folder / "test_batch.bin").write_bytes(records.tobytes())
    >>> images, labels = read_batch(folder / "test_batch.bin")
    >>> images.shape, labels.tolist()
    ((2, 3, 32, 32), [3, 7])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from robustlab.data.archive import ArchiveSource, ensure_extracted
from robustlab.data.base import Dataset, Split, count_note
from robustlab.data.registry import DATASETS
from robustlab.errors import DataError
from robustlab.paths import data_dir as resolve_data_dir

__all__ = ["RECORD_BYTES", "cifar10", "read_batch", "read_class_names"]

_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE
#: One record of a CIFAR-10 binary batch: a label byte and 3,072 pixel bytes.
RECORD_BYTES = 1 + _PIXELS
_NUM_CLASSES = 10
_FOLDER = "cifar-10-batches-bin"
_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_TEST_FILE = "test_batch.bin"
_META_FILE = "batches.meta.txt"
_OFFICIAL = {"train": 50_000, "test": 10_000}
# The official binary archive and its MD5.
_SOURCE = ArchiveSource(
    title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
)
_FIX = (
    "the file is truncated or damaged; delete the cifar-10-batches-bin folder so robustlab "
    "extracts (or downloads) cifar-10-binary.tar.gz again"
)


@DATASETS.register("cifar10", tags=("natural", "32x32", "rgb", "10 classes"))
def cifar10(data_dir: str | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 natural images (50,000 train / 10,000 test, 32x32 RGB), official binary release.

    Reads ``<data_dir>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` and
    ``batches.meta.txt``; extracts or downloads ``cifar-10-binary.tar.gz`` when they are missing.

    Args:
        data_dir: the data directory; ``None`` means ``$ROBUSTLAB_DATA``, else the user cache.
        download: fetch the archive from the official site if needed (MD5-verified).

    Raises:
        DataError: if a file is missing (and cannot be obtained) or malformed; the message
            names the file and the fix.

    Example:
        >>> ds = cifar10(data_dir="data", download=False)  # doctest: +SKIP
        >>> ds.classes[:3], ds.image_shape  # doctest: +SKIP
        (['airplane', 'automobile', 'bird'], (3, 32, 32))
    """
    root = resolve_data_dir(data_dir)
    folder = root / _FOLDER
    needed = [folder / name for name in (*_TRAIN_FILES, _TEST_FILE, _META_FILE)]
    if not all(path.is_file() for path in needed):
        if not folder.is_dir():
            ensure_extracted(_SOURCE, root, folder, into=root, download=download)
        for path in needed:
            if not path.is_file():
                raise DataError(
                    f"CIFAR-10 file not found: {path}. The folder {folder} is incomplete; "
                    f"delete it so robustlab extracts {_SOURCE.file_name} again, or copy the "
                    "missing file from the official binary release"
                )
    classes = read_class_names(folder / _META_FILE)
    parts = [read_batch(folder / name) for name in _TRAIN_FILES]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_images, test_labels = read_batch(folder / _TEST_FILE)
    notes = [
        count_note("CIFAR-10", name, count, _OFFICIAL[name])
        for name, count in (("train", len(train_labels)), ("test", len(test_labels)))
        if count != _OFFICIAL[name]
    ]
    return Dataset(
        name="cifar10",
        train=Split(torch.from_numpy(train_images), torch.from_numpy(train_labels)),
        test=Split(torch.from_numpy(test_images), torch.from_numpy(test_labels)),
        classes=classes,
        notes=notes,
    )


def read_batch(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Read a CIFAR-10 binary batch file into ``uint8`` images ``(N, 3, 32, 32)`` and labels.

    Raises:
        DataError: naming the file if it is missing, empty, not a whole number of 3,073-byte
            records, or has a label outside 0-9.
    """
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {err.strerror or err}") from err
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            f"{path} has {raw.size:,} bytes, not a positive multiple of {RECORD_BYTES:,} (one "
            f"label byte + {_PIXELS:,} pixel bytes per image): it is not a CIFAR-10 binary "
            f"batch (the Python pickle version is not read); {_FIX}"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= _NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{path}: record {int(bad[0])} has label {int(labels[bad[0]])}, outside 0-9 "
            f"({bad.size:,} such records); this is not a CIFAR-10 batch (CIFAR-100's binary "
            f"files have two label bytes per record); {_FIX}"
        )
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, _SIDE, _SIDE))
    return images, labels


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """The ten class names of ``batches.meta.txt`` (one per line; blank lines ignored).

    Raises:
        DataError: naming the file if it is unreadable or does not hold ten names.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != _NUM_CLASSES:
        raise DataError(
            f"{path} should list the {_NUM_CLASSES} CIFAR-10 class names, one per line, but "
            f"holds {len(names)} non-empty lines; {_FIX}"
        )
    return names
