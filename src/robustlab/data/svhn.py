"""SVHN (Street View House Numbers), format 2: cropped 32x32 digits from the official .mat files.

Files live in ``<data dir>/SVHN/``: ``train_32x32.mat`` (73,257 digits), ``test_32x32.mat``
(26,032) and, optionally, ``extra_32x32.mat`` (531,131 easier digits). They are MATLAB v5 files
read with :func:`scipy.io.loadmat` (a structured format, no pickle): ``X`` is ``uint8``
``(32, 32, 3, N)`` and ``y`` is ``(N, 1)`` with labels 1-10, where 10 stands for the digit 0;
robustlab maps it to 0, so class ``k`` is the digit ``k``. With ``extra=True`` the extra split
is appended to the training split (the usual protocol of the SVHN literature).

Missing files are downloaded from the official site when allowed, each MD5-verified.

Example:
    >>> import tempfile, scipy.io
    >>> path = Path(tempfile.mkdtemp()) / "test_32x32.mat"
    >>> scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": [[10], [3]]})
    >>> images, labels = read_mat(path)
    >>> images.shape, labels.tolist()
    ((2, 3, 32, 32), [0, 3])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from robustlab.data.base import Dataset, Split, count_note
from robustlab.data.download import download_file
from robustlab.data.registry import DATASETS
from robustlab.errors import DataError
from robustlab.paths import DATA_ENV
from robustlab.paths import data_dir as resolve_data_dir

__all__ = ["read_mat", "svhn"]

_SIDE = 32
_FOLDER = "SVHN"
_BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
# Official MD5s of the format-2 files (as listed on the SVHN page and by torchvision).
_MD5 = {
    "train": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test": "eb5a983be6a315427106f1b164d9cef3",
    "extra": "a93ce644f1a588dc4d68dda5feec44a7",
}
_OFFICIAL = {"train": 73_257, "test": 26_032, "extra": 531_131}
_FIX = "delete it so robustlab downloads a fresh copy, or replace it with the official file"


@DATASETS.register("svhn", tags=("digits", "32x32", "rgb", "10 classes"))
def svhn(data_dir: str | None = None, download: bool = True, extra: bool = False) -> Dataset:
    """SVHN house-number digits (73,257 train / 26,032 test, 32x32 RGB), format 2 .mat files.

    Reads ``<data_dir>/SVHN/{train,test}_32x32.mat`` (and ``extra_32x32.mat`` with
    ``extra``); label 10 (the digit 0) becomes 0.

    Args:
        data_dir: the data directory; ``None`` means ``$ROBUSTLAB_DATA``, else the user cache.
        download: fetch missing files from the official site (MD5-verified).
        extra: append the 531,131-digit extra split to the training split.

    Raises:
        DataError: if a file is missing (and cannot be downloaded) or malformed; the message
            names the file and the fix.

    Example:
        >>> ds = svhn(data_dir="data", download=False)  # doctest: +SKIP
        >>> ds.image_shape, len(ds.test)  # doctest: +SKIP
        ((3, 32, 32), 26032)
    """
    root = resolve_data_dir(data_dir)
    notes: list[str] = []
    train_images, train_labels = read_mat(_locate(root, "train", download))
    if len(train_labels) != _OFFICIAL["train"]:
        notes.append(count_note("SVHN", "train", len(train_labels), _OFFICIAL["train"]))
    if extra:
        extra_images, extra_labels = read_mat(_locate(root, "extra", download))
        if len(extra_labels) != _OFFICIAL["extra"]:
            notes.append(count_note("SVHN", "extra", len(extra_labels), _OFFICIAL["extra"]))
        train_images = np.concatenate([train_images, extra_images])
        train_labels = np.concatenate([train_labels, extra_labels])
        notes.append(
            f"SVHN training split includes the extra split ({len(extra_labels):,} easier "
            f"digits): {len(train_labels):,} training images in all"
        )
    test_images, test_labels = read_mat(_locate(root, "test", download))
    if len(test_labels) != _OFFICIAL["test"]:
        notes.append(count_note("SVHN", "test", len(test_labels), _OFFICIAL["test"]))
    return Dataset(
        name="svhn",
        train=Split(torch.from_numpy(train_images), torch.from_numpy(train_labels)),
        test=Split(torch.from_numpy(test_images), torch.from_numpy(test_labels)),
        classes=[str(d) for d in range(10)],
        notes=notes,
    )


def _locate(root: Path, split: str, download: bool) -> Path:
    path = root / _FOLDER / f"{split}_32x32.mat"
    if path.is_file():
        return path
    url = f"{_BASE_URL}{path.name}"
    if not download:
        reason = "downloading is switched off"
    else:
        try:
            return download_file(url, path, _MD5[split])
        except DataError as err:
            reason = str(err)
    raise DataError(
        f"SVHN file not found: {path} in the data directory {root}, and it could not be "
        f"downloaded: {reason}.\nFix: put the official {path.name} ({url}) there, or use a "
        f"data directory that contains {_FOLDER}/{path.name} with --data-dir DIR or "
        f"{DATA_ENV}=DIR"
    )


def read_mat(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Read an SVHN format-2 .mat file into ``uint8`` images ``(N, 3, 32, 32)`` and labels 0-9.

    Raises:
        DataError: naming the file if it is not a MATLAB v5 file, lacks ``X`` or ``y``, has
            the wrong shapes or types, or has labels outside 1-10.
    """
    path = Path(path)
    contents = _load(path)
    missing = [key for key in ("X", "y") if key not in contents]
    if missing:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise DataError(
            f"{path} has no variable {' or '.join(repr(k) for k in missing)} (it holds "
            f"{found or 'no variables'}); an SVHN format-2 file holds X (32x32x3xN images) and "
            f"y (labels); {_FIX}"
        )
    images, labels = np.asarray(contents["X"]), np.asarray(contents["y"])
    if images.ndim != 4 or images.shape[:3] != (_SIDE, _SIDE, 3) or images.dtype != np.uint8:
        raise DataError(
            f"{path}: X has shape {images.shape} and type {images.dtype}, expected uint8 "
            f"(32, 32, 3, N); this is not an SVHN format-2 (32x32) file; {_FIX}"
        )
    count = images.shape[3]
    if labels.size != count or (labels.ndim == 2 and labels.shape[1] != 1) or labels.ndim > 2:
        raise DataError(
            f"{path}: y has shape {labels.shape}, expected ({count}, 1) to match the {count:,} "
            f"images of X; {_FIX}"
        )
    values = labels.reshape(-1)
    if not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values)):
        raise DataError(f"{path}: y holds non-integer labels ({values.dtype}); {_FIX}")
    bad = np.flatnonzero((values < 1) | (values > 10))
    if bad.size:
        raise DataError(
            f"{path}: label {values[bad[0]].item()!r} of image {int(bad[0])} is outside 1-10 (SVHN "
            f"writes the digit 0 as 10); {bad.size:,} such labels; {_FIX}"
        )
    pixels = np.ascontiguousarray(images.transpose(3, 2, 0, 1))
    return pixels, (values.astype(np.int64) % 10)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"SVHN file not found: {path}")
    try:
        import scipy.io  # here: SciPy's I/O takes 0.25 s to import

        return dict(scipy.io.loadmat(path, variable_names=["X", "y"]))
    except NotImplementedError as err:  # scipy's message for HDF5-based v7.3 files
        raise DataError(
            f"{path} is a MATLAB v7.3 (HDF5) file; the official SVHN files are MATLAB v5, "
            f"which robustlab reads; {_FIX}"
        ) from err
    except Exception as err:  # loadmat reports damaged files with many exception types
        raise DataError(
            f"{path} is not a readable MATLAB v5 .mat file ({type(err).__name__}: {err}); it "
            f"may be truncated; {_FIX}"
        ) from err
