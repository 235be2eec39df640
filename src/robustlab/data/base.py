"""The dataset type every loader returns, and the split interface training and evaluation use.

:class:`SplitLike` is what the rest of robustlab asks of a split: its length, labels, image
shape, a prefix (``subset``), ``float32`` batches in ``[0, 1]`` in order or in a given order
(``batches``) and a ``fingerprint`` for cache keys. :class:`Split` keeps every image in memory
as a ``uint8`` tensor ``(N, C, H, W)`` (a quarter of the memory of float32);
:class:`robustlab.data.streaming.StreamingSplit` decodes image files lazily, batch by batch,
in worker processes, for data that does not fit in memory.

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
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SplitLike(Protocol):
    """What training, evaluation and the model cache need from a split of a dataset."""

    @property
    def labels(self) -> torch.Tensor:
        """``int64`` labels ``(N,)``, always in memory."""
        ...

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        ...

    def __len__(self) -> int: ...

    def subset(self, limit: int | None) -> SplitLike:
        """The first ``limit`` samples (all of them when ``limit`` is None)."""
        ...

    def batches(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(float32 images in [0, 1], labels)`` batches, in ``order`` if given."""
        ...

    def fingerprint(self) -> str:
        """A hex digest that changes whenever the images or labels change."""
        ...


def stored_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, order: torch.Tensor | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches as stored (no conversion), in ``order`` if given.

    Example:
        >>> [y.tolist() for _, y in stored_batches(torch.zeros(3, 1), torch.arange(3), 2, None)]
        [[0, 1], [2]]
    """
    total = len(labels) if order is None else len(order)
    for start in range(0, total, batch_size):
        if order is None:
            yield images[start : start + batch_size], labels[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield images[index], labels[index]


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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def batches(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` batches, images as float32 in ``[0, 1]``.

        Args:
            batch_size: images per batch (the last batch may be smaller).
            device: where the batches go.
            order: sample indices to visit (e.g. a seeded permutation for training); by
                default every sample in stored order.
        """
        for x, y in stored_batches(self.images, self.labels, batch_size, order):
            yield x.to(device).float().div_(255.0), y.to(device)

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
    train: SplitLike
    test: SplitLike
    classes: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return self.test.image_shape

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def count_note(title: str, split: str, count: int, official: int) -> str:
    """The dataset note for a split whose size differs from the official release.

    Example:
        >>> count_note("CIFAR-10", "test", 9_000, 10_000)[:55]
        'CIFAR-10 test split has 9,000 images, not the official '
    """
    if split == "train":
        consequence = (
            f"results trained on it are slightly below full-{title} results"
            if count < official
            else f"results trained on it are not comparable with full-{title} results"
        )
    else:
        consequence = f"accuracies on it are not directly comparable with published {title} ones"
    return (
        f"{title} {split} split has {count:,} images, not the official {official:,}: {consequence}"
    )
