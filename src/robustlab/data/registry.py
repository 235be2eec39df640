"""The registry of named datasets and the dataset-name syntax of studies.

A study names its dataset as a registry name (``mnist``, ``cifar10``, ``gtsrb``, ...) or, for a
dataset whose first parameter is ``path``, as ``NAME:PATH`` (``folder:/data/my-images``): the
part after the first colon becomes the ``path`` parameter. Further parameters (``image_size``,
``extra``, ...) come as a mapping. :func:`check_dataset` validates a name and its parameters
without loading anything; :func:`load_dataset` loads.

Every factory takes ``data_dir`` (``None`` means ``$ROBUSTLAB_DATA``, else the user cache; see
:func:`robustlab.paths.data_dir`) and ``download``.

Example:
    >>> resolve_dataset_name("folder:/data/signs")
    ('folder', {'path': '/data/signs'})
    >>> resolve_dataset_name("mnist")
    ('mnist', {})
    >>> check_dataset("svhn", {"extra": True})
    >>> check_dataset("svhn", {"extras": True})
    Traceback (most recent call last):
    ...
    robustlab.errors.UnknownNameError: unknown parameter of dataset 'svhn' 'extras'; ...
"""

from __future__ import annotations

from typing import Any

from robustlab.data.base import Dataset
from robustlab.errors import InvalidParameterError
from robustlab.paths import data_dir as resolve_data_dir
from robustlab.registry import Registry

__all__ = ["DATASETS", "check_dataset", "load_dataset", "resolve_dataset_name"]

#: Every dataset robustlab can load, by name. Factories take ``data_dir`` and ``download``.
DATASETS: Registry[Dataset] = Registry("dataset")

# Set by the caller (CLI --data-dir, run_study), never by a study's dataset parameters.
_RESERVED = ("data_dir",)


def resolve_dataset_name(name: str) -> tuple[str, dict[str, Any]]:
    """Split a study's dataset name into the registry name and the parameters it carries.

    ``NAME:PATH`` is accepted for registered datasets whose first parameter is ``path``.

    Raises:
        UnknownNameError: if the name (or the part before the colon) is not registered.
        InvalidParameterError: for ``NAME:PATH`` where ``NAME`` takes no path, or an empty path.
    """
    if not isinstance(name, str) or name in DATASETS or ":" not in name:
        DATASETS.entry(name)
        return name, {}
    base, _, path = name.partition(":")
    entry = DATASETS.entry(base)
    if not entry.parameter_names or entry.parameter_names[0] != "path":
        raise InvalidParameterError(
            f"dataset '{base}' takes no path, so '{name}' is not a valid dataset name; write "
            f"just '{base}'"
        )
    if not path.strip():
        raise InvalidParameterError(
            f"dataset name '{name}' has an empty path; write {base}:/path/to/images"
        )
    return base, {"path": path}


def check_dataset(name: str, params: dict[str, Any] | None = None) -> None:
    """Validate a dataset name and its parameters without loading anything.

    Raises:
        UnknownNameError: for an unknown dataset or parameter (the message lists valid ones).
        InvalidParameterError: for a reserved or doubly given parameter, or a missing one.
    """
    _merged(name, params or {})


def _merged(name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    base, from_name = resolve_dataset_name(name)
    for key in _RESERVED:
        if key in params:
            raise InvalidParameterError(
                f"dataset parameter '{key}' cannot be set in a study; use --data-dir DIR or "
                "ROBUSTLAB_DATA=DIR"
            )
    for key in from_name:
        if key in params:
            raise InvalidParameterError(
                f"dataset '{name}' already gives '{key}' in its name; drop params.{key}"
            )
    merged = {**from_name, **params}
    DATASETS.check_parameters(base, merged)
    return base, merged


def load_dataset(
    name: str, data_dir: str | None = None, download: bool = True, **params: Any
) -> Dataset:
    """Load a registered dataset by name.

    Args:
        name: a name in :data:`DATASETS` (``mnist``, ``cifar10``, ...), or ``folder:PATH``.
        data_dir: the data directory; ``None`` means ``$ROBUSTLAB_DATA``, else the user cache.
        download: fetch missing files from the official mirror (with checksum verification).
        **params: the dataset's own parameters (``image_size``, ``extra``, ...).

    Returns:
        The dataset; splits yield ``float32`` batches in ``[0, 1]``.

    Raises:
        UnknownNameError: for an unknown name or parameter; the message lists the valid ones.
        DataError: for a missing, corrupt or malformed data file.

    Example:
        >>> ds = load_dataset("mnist-sample")
        >>> ds.train.images.dtype, ds.train.labels.dtype
        (torch.uint8, torch.int64)
        >>> load_dataset("mnits")
        Traceback (most recent call last):
        ...
        robustlab.errors.UnknownNameError: unknown dataset 'mnits'; valid: ...
    """
    base, merged = _merged(name, params)
    root = resolve_data_dir(data_dir)
    return DATASETS.create(base, data_dir=str(root), download=download, **merged)
