"""``folder:PATH``: your own images, one sub-folder per class.

Two layouts are recognised:

* ``PATH/train/<class>/...`` and ``PATH/test/<class>/...``: the splits as given. The classes
  are the sorted sub-folders of ``train``; ``test`` may lack some of them but may not add any.
* ``PATH/<class>/...``: one tree, split per class by a seeded stratified fraction: within each
  class a seeded shuffle (``seed``) sends ``round(n * test_fraction)`` images (at least one,
  and never all when the class has two or more) to the test split and the rest to training.

Class names are the sorted sub-folder names; labels are their positions. Images are found
recursively (hidden files and folders skipped) by extension: PNG, JPEG, BMP, PPM / PGM / PBM /
PNM, WebP, TIFF and GIF (first frame); other files are ignored and counted in the notes. Each
split is put in a seeded random order, so a ``test_limit`` prefix or the report's example
images cover every class.

Images are grey or RGB: ``channels`` 1 or 3, or by default 1 when every image is grey and
3 otherwise (RGB images whose channels happen to be equal count as colour). They are resized
to ``image_size`` squared with Pillow's antialiased bilinear filter; without ``image_size``
they keep their own size, which must then be the same for all. ``stream`` decides whether the
decoded images are held in memory or decoded from disk batch by batch in ``workers`` processes
(``auto``: stream above 1 GiB of decoded pixels; see :mod:`robustlab.data.streaming`).

``PATH`` may start with ``~``; a relative ``PATH`` is looked up in the data directory first,
then in the current directory. Data fingerprints use paths relative to the folder, so they stay
the same for a copy of the folder elsewhere. A study's cell keys and model-cache keys also
contain the dataset name ``folder:PATH`` as written, though: with a relative ``PATH`` they
survive moving the whole data directory, with an absolute one they are tied to that location,
and a copy named by a different ``PATH`` is trained and evaluated afresh.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> top = Path(tempfile.mkdtemp())
    >>> for label in ("cat", "dog"):
    ...     (top / label).mkdir()
    ...     for i in range(5):
    ...         Image.new("L", (8, 8), color=40 * i).save(top / label / f"{i}.png")
    >>> ds = folder(str(top), image_size=4, workers=0)
    >>> ds.classes, len(ds.train), len(ds.test), ds.image_shape
    (['cat', 'dog'], 8, 2, (1, 4, 4))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError

from robustlab.data.base import Dataset
from robustlab.data.registry import DATASETS
from robustlab.data.streaming import (
    GREY_MODES,
    ImageSpec,
    decode_image,
    default_workers,
    make_split,
    probe_images,
    should_stream,
)
from robustlab.errors import DataError, InvalidParameterError
from robustlab.paths import DATA_ENV
from robustlab.paths import data_dir as resolve_data_dir

__all__ = ["IMAGE_EXTENSIONS", "DecodedImage", "folder", "read_image"]

#: File extensions (lower case) taken as images.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff"}
    | {".webp"}
)


@dataclass
class _Listing:
    """Image files and labels of one split, and how many other files were skipped."""

    paths: list[str]
    labels: list[int]
    ignored: int


@DATASETS.register("folder", tags=("your images", "one folder per class", "any size"))
def folder(
    path: str,
    data_dir: str | None = None,
    download: bool = True,
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    stream: bool | str = "auto",
    workers: int | None = None,
) -> Dataset:
    """Your images in one sub-folder per class (``folder:PATH`` in a study).

    Args:
        path: the folder (``PATH/<class>/`` or ``PATH/{train,test}/<class>/``).
        data_dir: where a relative ``path`` is looked up first (then the current directory).
        download: ignored (accepted so every dataset takes the same parameters).
        image_size: side of the square the images are resized to; default: keep their size,
            which must then be the same for every image.
        channels: 1 (grey) or 3 (RGB); default: 1 if every image is grey, else 3.
        test_fraction: share of each class that goes to the test split (single-tree layout).
        seed: seed of the stratified split and of the order of both splits.
        stream: ``true`` decodes batches from disk on demand, ``false`` decodes everything
            into memory, ``auto`` streams above 1 GiB of decoded pixels.
        workers: decoding processes (default: the usable CPUs, at most 4; 0 decodes in the
            calling process).

    Raises:
        DataError: if the folder is missing, has no class folders, a class without images,
            an unreadable image (named), or images of different sizes without ``image_size``.
        InvalidParameterError: for an out-of-range ``image_size``, ``channels``,
            ``test_fraction``, ``stream`` or ``workers``.
    """
    del download
    if image_size is not None and image_size < 1:
        raise InvalidParameterError(f"image_size must be >= 1, got {image_size}")
    if channels not in (None, 1, 3):
        raise InvalidParameterError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not 0 < test_fraction < 1:
        raise InvalidParameterError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if workers is not None and workers < 0:
        raise InvalidParameterError(f"workers must be >= 0, got {workers}")
    should_stream(stream, 0)  # validates the option before any work
    workers = default_workers() if workers is None else workers

    root = _resolve_root(path, data_dir)
    names = _sub_folders(root)
    if "train" in names or "test" in names:
        classes, train, test = _split_layout(root, names)
        layout = "train/ and test/ folders"
    else:
        classes, train, test = _single_tree(root, names, test_fraction, seed)
        layout = (
            f"one tree split {1 - test_fraction:.0%} / {test_fraction:.0%} per class (seed {seed})"
        )
    if len(classes) < 2:
        top = root / "train" if layout.startswith("train/") else root
        raise DataError(
            f"folder dataset {top} has {len(classes)} class folder ({', '.join(classes)}); a "
            "classifier needs at least two classes: put the images of each class in a "
            f"sub-folder of its own, e.g. {top / 'cats'} and {top / 'dogs'}"
        )
    bits = np.random.PCG64(seed)
    train_order, test_order = _shuffled(len(train.paths), bits), _shuffled(len(test.paths), bits)

    headers = probe_images(train.paths + test.paths, workers)
    grey = all(h.mode in GREY_MODES for h in headers)
    chosen_channels = channels if channels is not None else (1 if grey else 3)
    if image_size is not None:
        height = width = image_size
    else:
        sizes = {(h.width, h.height) for h in headers}
        if len(sizes) > 1:
            examples = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
            raise DataError(
                f"the images in {root} have {len(sizes)} different sizes ({examples}, ...); "
                "set image_size (e.g. params: {image_size: 32}) to resize them to one square"
            )
        width, height = sizes.pop()
    spec = ImageSpec(chosen_channels, height, width)
    total = len(train.paths) + len(test.paths)
    streaming = should_stream(stream, total * int(np.prod(spec.shape)))

    splits = {}
    for name, listing, order in (("train", train, train_order), ("test", test, test_order)):
        splits[name] = make_split(
            [listing.paths[i] for i in order],
            torch.tensor(listing.labels, dtype=torch.int64)[torch.from_numpy(order)],
            spec,
            root=root,
            workers=workers,
            stream=streaming,
        )
    notes = [
        f"folder dataset {root}: {len(classes)} classes, {len(train.paths):,} train / "
        f"{len(test.paths):,} test images ({layout})",
        f"images {'resized to' if image_size is not None else 'kept at their size'} "
        f"{height}x{width}, {'grey' if chosen_channels == 1 else 'RGB'}"
        + (" (every image is grey)" if channels is None and grey else "")
        + ("; streamed from disk" if streaming else ""),
    ]
    ignored = train.ignored + test.ignored
    if ignored:
        notes.append(f"{ignored:,} files in {root} are not images by their extension, ignored")
    return Dataset(
        name=f"folder:{path}",
        train=splits["train"],
        test=splits["test"],
        classes=classes,
        notes=notes,
    )


def _resolve_root(path: str, data_dir: str | None) -> Path:
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [resolve_data_dir(data_dir) / given, given]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = [str(c.absolute()) for c in candidates]
    looked = tried[0] if len(tried) == 1 else f"{', '.join(tried[:-1])} or {tried[-1]}"
    files = [t for t, c in zip(tried, candidates, strict=True) if c.exists()]
    what = f" ({', '.join(files)} is a file, not a folder)" if files else ""
    raise DataError(
        f"image folder not found: there is no folder at {looked}{what}. Fix: give "
        "the folder of your images (one sub-folder per class) as folder:/absolute/path, or a "
        f"path relative to the data directory (--data-dir DIR or {DATA_ENV}=DIR) or to the "
        "current directory"
    )


def _sub_folders(directory: Path) -> list[str]:
    try:
        return sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.is_dir() and not entry.name.startswith(".")
        )
    except OSError as err:
        raise DataError(f"cannot list {directory}: {err.strerror or err}") from err


def _images_in(class_dir: Path) -> tuple[list[str], int]:
    """Image files under ``class_dir`` (recursively, sorted) and the number of other files."""
    found: list[str] = []
    ignored = 0
    for current, dirs, files in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(current, name))
            else:
                ignored += 1
    return found, ignored


def _list_classes(top: Path, classes: list[str], *, require_images: bool) -> _Listing:
    listing = _Listing([], [], 0)
    for label, name in enumerate(classes):
        class_dir = top / name
        if not class_dir.is_dir():
            continue
        files, ignored = _images_in(class_dir)
        if not files and require_images:
            raise DataError(
                f"class folder {class_dir} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
            )
        listing.paths += files
        listing.labels += [label] * len(files)
        listing.ignored += ignored
    return listing


def _split_layout(root: Path, names: list[str]) -> tuple[list[str], _Listing, _Listing]:
    for needed in ("train", "test"):
        if needed not in names:
            raise DataError(
                f"{root} has a '{'test' if needed == 'train' else 'train'}' folder but no "
                f"'{needed}' folder; use either {root}/train/<class>/ and {root}/test/<class>/, "
                f"or one folder per class directly in {root}"
            )
    classes = _sub_folders(root / "train")
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders; put one folder per class there")
    unknown = sorted(set(_sub_folders(root / "test")) - set(classes))
    if unknown:
        raise DataError(
            f"{root / 'test'} has class folders that {root / 'train'} lacks: {unknown}; every "
            "test class needs training images"
        )
    train = _list_classes(root / "train", classes, require_images=True)
    test = _list_classes(root / "test", classes, require_images=False)
    if not test.paths:
        raise DataError(f"{root / 'test'} holds no images; put test images in its class folders")
    return classes, train, test


def _single_tree(
    root: Path, classes: list[str], test_fraction: float, seed: int
) -> tuple[list[str], _Listing, _Listing]:
    if not classes:
        raise DataError(
            f"{root} has no class folders; put the images of each class in a sub-folder "
            f"({root}/<class name>/...), or use {root}/train/<class>/ and {root}/test/<class>/"
        )
    everything = _list_classes(root, classes, require_images=True)
    labels = np.asarray(everything.labels)
    bits = np.random.PCG64(seed)
    train = _Listing([], [], everything.ignored)
    test = _Listing([], [], 0)
    for label in range(len(classes)):
        members = np.flatnonzero(labels == label)
        shuffled = members[_shuffled(len(members), bits)]
        count = len(members)
        n_test = 0 if count < 2 else min(count - 1, max(1, int(count * test_fraction + 0.5)))
        for index, target in ((shuffled[n_test:], train), (shuffled[:n_test], test)):
            target.paths += [everything.paths[i] for i in np.sort(index)]
            target.labels += [label] * len(index)
    if not test.paths:
        raise DataError(
            f"no test images: every class in {root} has a single image; add images so each "
            "class has at least two"
        )
    return classes, train, test


def _shuffled(count: int, bits: np.random.PCG64) -> npt.NDArray[np.intp]:
    """A seeded permutation of ``range(count)`` ranked from PCG64's version-stable raw output."""
    keys = np.asarray(bits.random_raw(count), dtype=np.uint64)
    return np.argsort(keys, kind="stable")


@dataclass(frozen=True)
class DecodedImage:
    """One image file decoded as the folder dataset decodes it, by :func:`read_image`.

    Attributes:
        pixels: ``float32`` tensor ``(C, H, W)`` in ``[0, 1]``; ``C`` is 1 for grey modes, 3
            otherwise.
        mode: the file's Pillow mode (``L``, ``RGB``, ``I;16``, ``F``, ``P``, ...).
        bits: bits per channel in the file: 1, 8, 16, or 32 for float pixels.
        warnings: what was changed on the way that the user should know (a dropped alpha
            channel), each naming the file.
    """

    pixels: torch.Tensor
    mode: str
    bits: int
    warnings: tuple[str, ...] = ()


#: Pillow modes with an alpha channel (dropped, not composited, when decoding).
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


def read_image(path: str | os.PathLike[str]) -> DecodedImage:
    """Decode one image file to ``[0, 1]`` floats, as the folder dataset decodes its images.

    Integer images go through the dataset's own decoding
    (:func:`robustlab.data.streaming.decode_image`): grey modes (``1``, ``L``, ``LA``, 16-bit
    ``I;16``, scaled to 8 bits) give one channel, everything else (``RGB``, ``RGBA``,
    palette ``P``, ``CMYK``, ...) three; an alpha channel is dropped, and said so in
    ``warnings``. Float (``F``) images, which datasets refuse, are taken as they are when
    every value is in ``[0, 1]``.

    Args:
        path: the image file.

    Returns:
        The pixels, the file's mode and bit depth, and warnings.

    Raises:
        DataError: naming the file and the fix: missing, a folder, empty, not an image, a
            header claiming more pixels than Pillow's decompression-bomb limit, truncated,
            float pixels outside ``[0, 1]`` or not finite, or an unsupported mode (``I``).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> file = Path(tempfile.mkdtemp()) / "deep.png"
        >>> Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(file)
        >>> image = read_image(file)
        >>> image.mode, image.bits, image.pixels.tolist()
        ('I;16', 16, [[[0.0, 1.0]]])
    """
    file = Path(path)
    if file.is_dir():
        raise DataError(f"{file} is a folder, not an image file; give the path of one image")
    if not file.exists():
        raise DataError(f"image not found: {file}; check the path (there is no file there)")
    if file.stat().st_size == 0:
        raise DataError(f"{file} is empty (0 bytes), not an image; give a non-empty image file")
    try:
        with Image.open(file) as opened:
            mode, width, height = opened.mode, opened.width, opened.height
            alpha = mode in _ALPHA_MODES or "transparency" in opened.info
    except Image.DecompressionBombError:
        raise _too_large(file) from None
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read image {file}: it is not an image (Pillow recognises no image format "
            "in it); give a PNG, JPEG, TIFF, BMP, PGM or WebP file"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read image {file}: {err}; replace the file with a readable image"
        ) from err
    warnings = []
    if alpha:
        warnings.append(
            f"{file} has an alpha channel (mode {mode}{', transparency' if mode == 'P' else ''}"
            "); it was dropped, not composited: transparent pixels keep their colour. Flatten "
            "the image onto a background first if that matters"
        )
    if mode == "F":
        pixels = torch.from_numpy(_float_pixels(file))[None]
        return DecodedImage(pixels, mode, 32, tuple(warnings))
    channels = 1 if mode in GREY_MODES else 3
    decoded = decode_image(str(file), ImageSpec(channels, height, width))
    pixels = torch.from_numpy(decoded.astype(np.float32)).div_(255.0)
    bits = 1 if mode == "1" else 16 if mode.startswith("I;16") else 8
    return DecodedImage(pixels, mode, bits, tuple(warnings))


def _float_pixels(file: Path) -> npt.NDArray[np.float32]:
    """The pixels of a float (``F``) image, which must be finite and in ``[0, 1]``."""
    try:
        with Image.open(file) as opened:
            values = np.asarray(opened, dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot decode image {file}: {err}; replace the file with a readable image"
        ) from err
    finite = np.isfinite(values)
    if not finite.all():
        raise DataError(
            f"{file} has float pixels, {int((~finite).sum()):,} of them NaN or infinite; "
            "robustlab needs finite values in [0, 1]. Fix: replace them (e.g. with 0) and save "
            "the image again"
        )
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise DataError(
            f"{file} has float pixels from {low:g} to {high:g}, outside [0, 1], the range "
            "robustlab takes float images in. Fix: rescale them to [0, 1] (e.g. divide by "
            "the maximum), or save the image as 8- or 16-bit integers"
        )
    return np.array(values, dtype=np.float32)  # a writable copy


def _too_large(file: Path) -> DataError:
    """The error for a file whose header claims more pixels than Pillow decodes."""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    size = _claimed_size(file)
    claimed = f"{size[0]:,} x {size[1]:,} pixels ({size[0] * size[1]:,})" if size else "more"
    return DataError(
        f"{file} claims to be {claimed}, above the limit of {limit:,} pixels robustlab "
        "decodes (Pillow's guard against decompression bombs); it was not decoded. Fix: "
        "downscale or crop the image below the limit; if the file is genuine and you trust it, "
        "raise PIL.Image.MAX_IMAGE_PIXELS in your own code"
    )


def _claimed_size(file: Path) -> tuple[int, int] | None:
    """Width and height from the file's header, read without Pillow's size guard."""
    try:
        with file.open("rb") as handle:
            prefix = handle.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                if accept is not None and not accept(prefix):
                    continue
                handle.seek(0)
                try:
                    image = factory(handle, str(file))
                except Exception:  # not this format: try the next
                    continue
                return int(image.width), int(image.height)
    except OSError:
        pass
    return None
