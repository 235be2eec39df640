"""The in-memory dataset type every loader returns.

Images are kept as ``uint8`` tensors ``(N, C, H, W)`` (a quarter of the memory of float32) and
turned into the project's currency, ``float32`` in ``[0, 1]``, one batch at a time.

Example:
    >>> import torch
    >>> split = Split(torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.arange(5))
    >>> ds = Dataset("toy", split, split, [str(i) for i in range(5)])
    >>> x, y = next(ds.test.batches(batch_size=2))
    >>> x.dtype, tuple(x.shape), y.tolist()
    (torch.float32, (2, 1, 4, 4), [0, 1])
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Split:
    """One split of a dataset: ``uint8`` images ``(N, C, H, W)`` and ``int64`` labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("Split.images must be a uint8 tensor of shape (N, C, H, W)")
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError("Split.labels must be a 1-D tensor with one label per image")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None) -> Split:
        """The first ``limit`` samples (all of them when ``limit`` is None)."""
        if limit is None or limit >= len(self):
            return self
        return Split(self.images[:limit], self.labels[:limit])

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` batches in order, images as float32 in ``[0, 1]``."""
        for start in range(0, len(self), batch_size):
            x = self.images[start : start + batch_size].to(device)
            y = self.labels[start : start + batch_size].to(device)
            yield x.float().div_(255.0), y

    def fingerprint(self) -> str:
        """SHA-256 of the images and labels: changes whenever the data changes."""
        digest = hashlib.sha256()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset with a train and a test split."""

    name: str
    train: Split
    test: Split
    classes: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.test.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)
