"""Image files decoded batch by batch in worker processes: the streaming split.

:class:`StreamingSplit` holds file paths and labels, never the pixels: every call of
:meth:`~StreamingSplit.batches` decodes the files it needs, in ``torch.utils.data.DataLoader``
worker processes (``workers``; 0 decodes in the calling process), and yields ``float32``
batches in ``[0, 1]``. Batches come in the order asked for: stored order for evaluation, or
an explicit index order (a permutation drawn from a seeded generator) for training, so training
on a streaming split is exactly as deterministic as on an in-memory one and gives the same
weights when the decoded pixels are the same. The loader gets its own generator, so streaming
draws nothing from torch's global generator (the training loop's dropout stream is untouched).

Decoding (:func:`decode_image`) is Pillow: convert to grey (``L``; 16-bit greys scaled to 8
bits) or ``RGB`` (alpha dropped, not composited), optionally crop a box, then resize to
the split's size with Pillow's antialiased bilinear filter when the size differs.

The fingerprint (a model-cache key) hashes each file's relative path, label, crop box and
SHA-256 of its *bytes*, plus the decoding settings; it is computed once per split object, in
the worker processes. That reads every file once more per run (its encoded bytes, not
decoded pixels), which is much cheaper than decoding; hashing only names, sizes and
modification times would be faster but misses edits that keep the size and differs between
copies of the same data. An in-memory split made by :meth:`StreamingSplit.load` has the
standard pixel fingerprint of :class:`~robustlab.data.base.Split` instead, so switching a
dataset between streaming and in-memory changes its model-cache key.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.new("L", (4, 4), color=60 * i).save(folder / f"{i}.png")
    >>> paths = [str(folder / f"{i}.png") for i in range(3)]
    >>> split = StreamingSplit(paths, torch.tensor([0, 1, 2]), ImageSpec(1, 4, 4), root=folder)
    >>> x, y = next(split.batches(batch_size=2, order=torch.tensor([2, 0, 1])))
    >>> x.shape, (x[:, 0, 0, 0] * 255).round().tolist(), y.tolist()
    (torch.Size([2, 1, 4, 4]), [120.0, 0.0], [2, 0])
    >>> split.load().images.shape
    torch.Size([3, 1, 4, 4])
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from robustlab.data.base import Split
from robustlab.errors import DataError, InvalidParameterError

__all__ = [
    "GREY_MODES",
    "STREAM_THRESHOLD_BYTES",
    "Box",
    "ImageHeader",
    "ImageSpec",
    "StreamingSplit",
    "decode_image",
    "default_workers",
    "make_split",
    "probe_images",
    "should_stream",
]

#: ``stream: auto`` streams when the decoded ``uint8`` images would take more than this.
STREAM_THRESHOLD_BYTES = 1 << 30

#: Pillow modes that hold one grey channel (``auto`` channels picks 1 when all images have one).
GREY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N"})

#: A crop box ``(left, upper, right, lower)`` in pixels, right and lower exclusive.
Box = tuple[int, int, int, int]

_UNSUPPORTED_MODES = frozenset({"I", "F"})
_DECODE_BATCH = 256
_PROBE_BATCH = 512
_MAX_DEFAULT_WORKERS = 4
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageSpec:
    """How files become tensors: channels (1 grey, 3 RGB) and the output height and width."""

    channels: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise InvalidParameterError(
                f"channels must be 1 (grey) or 3 (RGB), got {self.channels}"
            )
        if self.height < 1 or self.width < 1:
            raise InvalidParameterError(
                f"image size must be positive, got {self.height}x{self.width}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a decoded image."""
        return self.channels, self.height, self.width


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: Pillow mode, width and height."""

    mode: str
    width: int
    height: int


def default_workers() -> int:
    """Decoding worker processes when none are asked for: the usable CPUs, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_DEFAULT_WORKERS, cpus))


def should_stream(stream: bool | str, decoded_bytes: int) -> bool:
    """Resolve a ``stream`` option (``true``, ``false`` or ``auto``) for data of this size.

    Example:
        >>> should_stream("auto", 10_000), should_stream("auto", 2**31), should_stream(True, 1)
        (False, True, True)
    """
    if isinstance(stream, bool):
        return stream
    if isinstance(stream, str) and stream.lower() in ("true", "false", "auto"):
        choice = stream.lower()
        return decoded_bytes > STREAM_THRESHOLD_BYTES if choice == "auto" else choice == "true"
    raise InvalidParameterError(f"stream must be true, false or auto, got {stream!r}")


def decode_image(path: str, spec: ImageSpec, box: Box | None = None) -> npt.NDArray[np.uint8]:
    """Decode one image file to a ``uint8`` array ``(C, H, W)`` as ``spec`` says.

    Args:
        path: the file (any format Pillow reads).
        spec: channels and output size.
        box: crop this box (clipped to the image) before resizing.

    Raises:
        DataError: naming the file, if it cannot be read or decoded (truncated, not an image,
            an unsupported pixel mode) or the box is empty.
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            image = _convert(opened, spec.channels, path)
        resize_box = None
        if box is not None:
            left, upper = max(0, box[0]), max(0, box[1])
            right, lower = min(image.width, box[2]), min(image.height, box[3])
            if right <= left or lower <= upper:
                raise DataError(
                    f"the crop box {box} of {path} is empty inside the {image.width}x"
                    f"{image.height} image; fix the box in the annotation file"
                )
            resize_box = (left, upper, right, lower)
        if resize_box is not None or image.size != (spec.width, spec.height):
            image = image.resize(
                (spec.width, spec.height), Image.Resampling.BILINEAR, box=resize_box
            )
        pixels = np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"cannot decode image {path}: {err}; replace the file with a readable image or "
            "remove it"
        ) from err
    pixels = pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _convert(image: Image.Image, channels: int, path: str) -> Image.Image:
    if image.mode in _UNSUPPORTED_MODES:
        raise DataError(
            f"{path} has 32-bit pixel mode '{image.mode}', which robustlab does not map to 8 "
            "bits unambiguously; convert it to an 8-bit grey or RGB image"
        )
    if image.mode.startswith("I;16"):
        grey16 = np.asarray(image).astype(np.uint16)
        image = Image.fromarray((grey16 >> 8).astype(np.uint8), mode="L")
    wanted = "L" if channels == 1 else "RGB"
    return image if image.mode == wanted else image.convert(wanted)


def read_header(path: str) -> ImageHeader:
    """The mode and size of an image file, from its header only (nothing is decoded).

    Raises:
        DataError: naming the file if it is not an image Pillow recognises, or its pixel
            mode is not supported.
    """
    try:
        with Image.open(path) as image:
            header = ImageHeader(image.mode, image.width, image.height)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"cannot read image {path}: {err}; replace it with a readable image or remove it"
        ) from err
    if header.mode in _UNSUPPORTED_MODES:
        raise DataError(
            f"{path} has 32-bit pixel mode '{header.mode}', which robustlab does not map to 8 "
            "bits unambiguously; convert it to an 8-bit grey or RGB image"
        )
    return header


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes.

    Raises:
        DataError: naming the file if it cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    return digest.hexdigest()


# --- work in worker processes ------------------------------------------------------------
# Each task maps a list of indices to (result, error message). Errors travel as text so the
# caller raises a clean DataError instead of DataLoader's wrapped worker traceback.

_Outcome = tuple[Any, "str | None"]


class _Decode(TorchDataset[_Outcome]):
    def __init__(self, paths: Sequence[str], boxes: Sequence[Box] | None, spec: ImageSpec):
        self.paths, self.boxes, self.spec = paths, boxes, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: list[int]) -> _Outcome:  # type: ignore[override]
        out = np.empty((len(index), *self.spec.shape), dtype=np.uint8)
        try:
            for k, i in enumerate(index):
                box = self.boxes[i] if self.boxes is not None else None
                out[k] = decode_image(self.paths[i], self.spec, box)
        except DataError as err:
            return None, str(err)
        return torch.from_numpy(out), None


class _PerFile(TorchDataset[_Outcome]):
    """``fn`` of every file of an index batch (in a worker); a ``DataError`` becomes a message.

    ``fn`` must be a module-level function, so that worker processes can unpickle it.
    """

    def __init__(self, paths: Sequence[str], fn: Callable[[str], Any]):
        self.paths = paths
        self.fn = fn

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: list[int]) -> _Outcome:  # type: ignore[override]
        try:
            return [self.fn(self.paths[i]) for i in index], None
        except DataError as err:
            return None, str(err)


def _identity(outcome: _Outcome) -> _Outcome:
    return outcome


def _run(task: TorchDataset[_Outcome], batches: Sequence[list[int]], workers: int) -> Iterator[Any]:
    """Results of ``task`` on each index list, in order, computed by ``workers`` processes."""
    workers = min(workers, len(batches))
    loader: DataLoader[_Outcome] = DataLoader(
        task,
        batch_size=None,
        sampler=batches,  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_identity,  # type: ignore[arg-type]
        generator=torch.Generator(),  # the loader's base seed must not come from the global one
        prefetch_factor=2 if workers else None,
    )
    for result, error in loader:
        if error is not None:
            raise DataError(error)
        yield result


def _chunks(count: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def probe_images(paths: Sequence[str], workers: int = 0) -> list[ImageHeader]:
    """Read the header of every file (mode and size), in ``workers`` processes.

    Raises:
        DataError: naming the first file that is not a readable image.
    """
    headers: list[ImageHeader] = []
    for part in _run(_PerFile(paths, read_header), _chunks(len(paths), _PROBE_BATCH), workers):
        headers.extend(part)
    return headers


class StreamingSplit:
    """A split whose images stay on disk and are decoded batch by batch.

    Args:
        paths: the image files, in the split's order.
        labels: ``int64`` labels, one per file.
        spec: channels and output size of the decoded images.
        root: the dataset folder; fingerprints use paths relative to it, so a moved copy of
            the data keeps its fingerprint (a study's keys also hold the dataset name as
            written: see :mod:`robustlab.data.folder`).
        boxes: an optional crop box per file (e.g. GTSRB's regions of interest).
        workers: decoding processes (0: decode in the calling process).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        spec: ImageSpec,
        *,
        root: str | os.PathLike[str],
        boxes: Sequence[Box] | None = None,
        workers: int = 0,
        digests: Sequence[str] | None = None,
    ) -> None:
        if labels.ndim != 1 or len(labels) != len(paths):
            raise ValueError("StreamingSplit needs a 1-D label tensor with one label per file")
        if boxes is not None and len(boxes) != len(paths):
            raise ValueError("StreamingSplit needs one crop box per file")
        if workers < 0:
            raise InvalidParameterError(f"workers must be >= 0, got {workers}")
        self.paths = list(paths)
        self._labels = labels.to(torch.int64)
        self.spec = spec
        self.root = str(root)
        self.boxes = list(boxes) if boxes is not None else None
        self.workers = workers
        self._digests = list(digests) if digests is not None else None

    @property
    def labels(self) -> torch.Tensor:
        """``int64`` labels ``(N,)``."""
        return self._labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every decoded image."""
        return self.spec.shape

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (
            f"StreamingSplit({len(self)} files under {self.root}, shape {self.image_shape}, "
            f"workers={self.workers})"
        )

    def subset(self, limit: int | None) -> StreamingSplit:
        """The first ``limit`` samples (all of them when ``limit`` is None)."""
        if limit is None or limit >= len(self):
            return self
        return StreamingSplit(
            self.paths[:limit],
            self._labels[:limit],
            self.spec,
            root=self.root,
            boxes=self.boxes[:limit] if self.boxes is not None else None,
            workers=self.workers,
            digests=self._digests[:limit] if self._digests is not None else None,
        )

    def decoded(self, index_batches: Iterable[list[int]]) -> Iterator[torch.Tensor]:
        """``uint8`` image batches ``(n, C, H, W)`` for each list of sample indices, in order."""
        task = _Decode(self.paths, self.boxes, self.spec)
        return _run(task, list(index_batches), self.workers)

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
        indices = list(range(len(self))) if order is None else order.tolist()
        index_batches = [
            indices[start : start + batch_size] for start in range(0, len(indices), batch_size)
        ]
        for index, pixels in zip(index_batches, self.decoded(index_batches), strict=True):
            y = self._labels[torch.tensor(index, dtype=torch.int64)]
            yield pixels.to(device).float().div_(255.0), y.to(device)

    def load(self) -> Split:
        """Decode every image into an in-memory :class:`~robustlab.data.base.Split`."""
        images = torch.empty((len(self), *self.spec.shape), dtype=torch.uint8)
        start = 0
        for pixels in self.decoded(_chunks(len(self), _DECODE_BATCH)):
            images[start : start + len(pixels)] = pixels
            start += len(pixels)
        return Split(images, self._labels.clone())

    def digests(self) -> list[str]:
        """SHA-256 of every file's bytes (computed once, in the worker processes)."""
        if self._digests is None:
            found: list[str] = []
            for part in _run(
                _PerFile(self.paths, file_digest), _chunks(len(self), _PROBE_BATCH), self.workers
            ):
                found.extend(part)
            self._digests = found
        return self._digests

    def fingerprint(self) -> str:
        """SHA-256 over relative paths, labels, crop boxes, file contents and decoding settings."""
        digest = hashlib.sha256()
        digest.update(f"robustlab-streaming-v1 {self.spec.shape}\n".encode())
        labels = self._labels.tolist()
        for i, content in enumerate(self.digests()):
            relative = os.path.relpath(self.paths[i], self.root).replace(os.sep, "/")
            box = self.boxes[i] if self.boxes is not None else None
            digest.update(f"{relative}\t{labels[i]}\t{box}\t{content}\n".encode())
        return digest.hexdigest()


def make_split(
    paths: Sequence[str],
    labels: torch.Tensor,
    spec: ImageSpec,
    *,
    root: str | os.PathLike[str],
    boxes: Sequence[Box] | None = None,
    workers: int = 0,
    stream: bool = False,
) -> StreamingSplit | Split:
    """A streaming split of the files, or (``stream=False``) all of them decoded into memory."""
    split = StreamingSplit(paths, labels, spec, root=root, boxes=boxes, workers=workers)
    return split if stream else split.load()
