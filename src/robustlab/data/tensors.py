"""Images and labels a user already holds as tensors: ``tensors:PATH`` in a study.

:func:`save_tensor_dataset` writes a test split (and optionally a train split) to one
safetensors file, class names in its metadata; the registered dataset ``tensors`` reads it back.
This is how :func:`robustlab.evaluate` turns an ``(images, labels)`` pair or a DataLoader into
an ordinary study: the file lives in the run directory and the study names it, so the same
YAML reruns from the command line.

Images are stored exactly as given: ``uint8`` stays ``uint8`` (read as ``x / 255``); ``float32``
in ``[0, 1]`` stays ``float32``, so a model is evaluated on the very pixels it was given, not on
a rounded copy. A float image outside ``[0, 1]`` is refused with the fix (divide by 255, or undo
the normalisation and declare it on the model instead).

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "data.safetensors"
    >>> _ = save_tensor_dataset(path, torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> ds = tensors(str(path))
    >>> len(ds.test), ds.image_shape, ds.classes, len(ds.train)
    (6, (1, 8, 8), ['0', '1', '2'], 0)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from robustlab.data.base import Dataset, stored_batches
from robustlab.data.registry import DATASETS
from robustlab.errors import DataError, InvalidParameterError

PathLike = str | os.PathLike[str]

_KEYS = ("test_images", "test_labels", "train_images", "train_labels")


@dataclass(frozen=True)
class TensorSplit:
    """A split held as given: ``uint8`` (read as ``x / 255``) or ``float32`` in ``[0, 1]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, limit: int | None) -> TensorSplit:
        """The first ``limit`` samples (all of them when ``limit`` is None)."""
        if limit is None or limit >= len(self):
            return self
        return TensorSplit(self.images[:limit], self.labels[:limit])

    def batches(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(float32 images in [0, 1], labels)`` batches, in ``order`` if given."""
        for x, y in stored_batches(self.images, self.labels, batch_size, order):
            x = x.to(device)
            yield (x.float().div_(255.0) if x.dtype == torch.uint8 else x.clone()), y.to(device)

    def fingerprint(self) -> str:
        """SHA-256 of the images (with their dtype) and labels."""
        digest = hashlib.sha256()
        digest.update(f"{tuple(self.images.shape)} {self.images.dtype}".encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()


def checked_images(images: object, what: str) -> torch.Tensor:
    """``images`` as a CPU ``uint8`` or ``float32`` tensor ``(N, C, H, W)``, values checked.

    Raises:
        InvalidParameterError: for another type, shape, dtype, or float values outside
            ``[0, 1]`` (or not finite), naming ``what`` and the fix.
    """
    if not isinstance(images, torch.Tensor):
        raise InvalidParameterError(
            f"{what} must be a torch.Tensor (N, C, H, W), got {type(images).__name__}"
        )
    if images.ndim == 3:
        raise InvalidParameterError(
            f"{what} has shape {tuple(images.shape)}; give (N, C, H, W): add the channel axis "
            "with images.unsqueeze(1) for grey images"
        )
    if images.ndim != 4 or images.shape[0] == 0:
        raise InvalidParameterError(
            f"{what} has shape {tuple(images.shape)}; give a non-empty batch (N, C, H, W)"
        )
    x = images.detach().cpu()
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise InvalidParameterError(
            f"{what} has dtype {x.dtype}; give uint8 (0-255) or float images in [0, 1]"
        )
    x = x.float().contiguous()
    if not bool(torch.isfinite(x).all()):
        raise InvalidParameterError(f"{what} holds NaN or infinite values; give finite pixels")
    low, high = (float(v) for v in torch.aminmax(x))
    if low < 0.0 or high > 1.0:
        hint = (
            "divide by 255 (pixels look like 0-255)"
            if high > 1.0 and low >= 0.0
            else "undo the normalisation and declare it on the model (normalize=...) instead"
        )
        raise InvalidParameterError(
            f"{what} has values in [{low:.4g}, {high:.4g}]; robustlab's images are in [0, 1]: "
            f"{hint}"
        )
    return x


def checked_labels(labels: object, count: int, what: str) -> torch.Tensor:
    """``labels`` as a CPU ``int64`` tensor of ``count`` non-negative class indices.

    Raises:
        InvalidParameterError: for another type, shape, length or negative values.
    """
    if not isinstance(labels, torch.Tensor):
        raise InvalidParameterError(
            f"{what} must be a torch.Tensor of class indices, got {type(labels).__name__}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1:
        raise InvalidParameterError(
            f"{what} must be a 1-D integer tensor of class indices, got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    if len(labels) != count:
        raise InvalidParameterError(f"{what} has {len(labels)} labels for {count} images")
    y = labels.detach().cpu().to(torch.int64).contiguous()
    if bool((y < 0).any()):
        raise InvalidParameterError(f"{what} holds negative class indices")
    return y


def save_tensor_dataset(
    path: PathLike,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: Sequence[str] | int | None = None,
    train_images: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
) -> Path:
    """Write a ``tensors`` dataset file; rewrite it only when its content changes.

    Args:
        path: the safetensors file to write.
        images: test images ``(N, C, H, W)``, ``uint8`` or float in ``[0, 1]``.
        labels: their class indices.
        classes: class names, or their number (names ``"0"``, ``"1"``...); by default one
            more than the largest label.
        train_images: optional training images (same rules), for studies that train.
        train_labels: their class indices.

    Returns:
        The path written.

    Raises:
        InvalidParameterError: for images or labels of the wrong kind, or too few classes.
    """
    tensors = {"test_images": checked_images(images, "images")}
    tensors["test_labels"] = checked_labels(labels, len(tensors["test_images"]), "labels")
    if (train_images is None) != (train_labels is None):
        raise InvalidParameterError("give train_images and train_labels together, or neither")
    if train_images is not None:
        tensors["train_images"] = checked_images(train_images, "train_images")
        tensors["train_labels"] = checked_labels(
            train_labels, len(tensors["train_images"]), "train_labels"
        )
        if tensors["train_images"].shape[1:] != tensors["test_images"].shape[1:]:
            raise InvalidParameterError(
                f"train_images are {tuple(tensors['train_images'].shape[1:])} and images "
                f"{tuple(tensors['test_images'].shape[1:])}; one image shape for both"
            )
    top = max(int(t.max()) for k, t in tensors.items() if k.endswith("labels")) + 1
    names = _class_names(classes, top)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"classes": json.dumps(names)})
    if target.is_file() and _same_file(tmp, target):
        tmp.unlink()
    else:
        os.replace(tmp, target)
    return target


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _class_names(classes: Sequence[str] | int | None, needed: int) -> list[str]:
    if classes is None:
        names = [str(i) for i in range(max(needed, 2))]
    elif isinstance(classes, int):
        names = [str(i) for i in range(classes)]
    else:
        names = [str(c) for c in classes]
    if len(names) < 2:
        raise InvalidParameterError(f"a dataset needs at least two classes, got {len(names)}")
    if len(names) < needed:
        raise InvalidParameterError(
            f"labels go up to {needed - 1} but only {len(names)} classes are named; give "
            f"classes={needed} or the list of {needed} names"
        )
    return names


@DATASETS.register("tensors", tags=("your tensors", "safetensors file"))
def tensors(path: str, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Images and labels saved by ``save_tensor_dataset`` (``tensors:PATH`` in a study).

    ``data_dir`` and ``download`` are ignored: the file is the data.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"tensor dataset file {file} not found (resolved to {file.resolve()}); write it with "
            "robustlab.data.tensors.save_tensor_dataset(path, images, labels)"
        )
    try:
        with safe_open(str(file), framework="pt") as f:
            keys = set(f.keys())
            missing = {"test_images", "test_labels"} - keys
            if missing:
                raise DataError(
                    f"{file} lacks {', '.join(sorted(missing))}; it holds {sorted(keys)}; write "
                    "it with robustlab.data.tensors.save_tensor_dataset"
                )
            loaded = {k: f.get_tensor(k) for k in _KEYS if k in keys}
            metadata = f.metadata() or {}
    except SafetensorError as err:
        raise DataError(
            f"{file} is not a safetensors file ({err}); write it with "
            "robustlab.data.tensors.save_tensor_dataset"
        ) from None
    classes = json.loads(metadata.get("classes", "null")) or [
        str(i) for i in range(int(loaded["test_labels"].max()) + 1)
    ]
    test = TensorSplit(loaded["test_images"], loaded["test_labels"])
    if "train_images" in loaded:
        train = TensorSplit(loaded["train_images"], loaded["train_labels"])
    else:
        train = TensorSplit(test.images[:0], test.labels[:0])
    return Dataset(f"tensors:{file.name}", train, test, classes)
