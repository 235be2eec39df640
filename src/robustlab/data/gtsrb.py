"""GTSRB, the German Traffic Sign Recognition Benchmark: 43 classes, official archives.

Layout under the data directory, as the three official zips extract::

    GTSRB/Final_Training/Images/00000/00000_00000.ppm ... GT-00000.csv   (one folder per class)
    GTSRB/Final_Test/Images/00000.ppm ...                              (test images)
    GTSRB/GT-final_test.csv                                            (test labels)

Every CSV is semicolon-separated with the columns ``Filename;Width;Height;Roi.X1;Roi.Y1;
Roi.X2;Roi.Y2;ClassId``. ``GT-final_test.csv`` comes from ``GTSRB_Final_Test_GT.zip``; it may
also sit directly in the data directory (where unzipping that archive puts it). The
``GT-final_test.test.csv`` inside the test-image zip has no class ids and is not used.

Images (15x15 to 250x250 pixels) are resized to ``image_size`` squared, 48x48 by default as
in Aghdam et al. (2016). With ``roi`` (the default), each image is first cropped to its
annotated region of interest, the sign's bounding box (corners taken as inclusive pixel
coordinates, clipped to the image): every GTSRB image has a margin of about 10 % of the sign
(at least 5 pixels) around it, and the boxes are part of the official annotation for train and
test alike, so cropping is legitimate and makes the sign fill the frame as in most GTSRB work
since Ciresan et al. (2012). ``roi=False`` keeps the margin.

The official training set is ordered by class and by track (30 images of one physical sign);
robustlab puts it in a fixed seeded order (seed 0) so a ``train_limit`` prefix covers every
class. The test set keeps the official order, which is already mixed.

Decoded images are held in memory (48x48 RGB: about 360 MB for both splits) unless
``stream`` says otherwise (see :mod:`robustlab.data.streaming`).

Example:
    >>> len(CLASS_NAMES), CLASS_NAMES[14]
    (43, 'Stop')
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustlab.data.archive import ArchiveSource, ensure_extracted
from robustlab.data.base import Dataset, count_note
from robustlab.data.registry import DATASETS
from robustlab.data.streaming import Box, ImageSpec, default_workers, make_split, should_stream
from robustlab.errors import DataError, InvalidParameterError
from robustlab.paths import data_dir as resolve_data_dir

__all__ = ["CLASS_NAMES", "COLUMNS", "Annotation", "gtsrb", "read_annotations"]

#: The 43 sign classes, by class id.
CLASS_NAMES = [
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
]

COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_OFFICIAL = {"train": 39_209, "test": 12_630}
_ORDER_SEED = 0
_BASE_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
# MD5s of the official archives as listed by torchvision (test images, test labels) and by
# several independent GTSRB loaders (training images).
_TRAIN_ZIP = ArchiveSource(
    "GTSRB training images",
    _BASE_URL + "GTSRB_Final_Training_Images.zip",
    "f33fd80ac59bff73c82d25ab499e03a3",
)
_TEST_ZIP = ArchiveSource(
    "GTSRB test images",
    _BASE_URL + "GTSRB_Final_Test_Images.zip",
    "c7e4e6327067d32654124b0fe9e82185",
)
_TEST_GT_ZIP = ArchiveSource(
    "GTSRB test labels",
    _BASE_URL + "GTSRB_Final_Test_GT.zip",
    "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
)
_TEST_CSV = "GT-final_test.csv"


@dataclass(frozen=True)
class Annotation:
    """One row of a GTSRB CSV: the image file, its class and its region of interest."""

    path: str
    label: int
    box: Box  # (left, upper, right, lower), right and lower exclusive


@DATASETS.register("gtsrb", tags=("traffic signs", "43 classes", "rgb", "varying size"))
def gtsrb(
    data_dir: str | None = None,
    download: bool = True,
    image_size: int = 48,
    roi: bool = True,
    stream: bool | str = "auto",
    workers: int | None = None,
) -> Dataset:
    """GTSRB traffic signs (39,209 train / 12,630 test, 43 classes), resized to a square.

    Reads the official ``GTSRB/Final_Training`` and ``GTSRB/Final_Test`` trees and
    ``GT-final_test.csv`` under the data directory; extracts or downloads the official zips
    when they are missing.

    Args:
        data_dir: the data directory; ``None`` means ``$ROBUSTLAB_DATA``, else the user cache.
        download: fetch missing archives from the official site (MD5-verified).
        image_size: side of the square the images are resized to (48 as in aghdam2016).
        roi: crop each image to its annotated region of interest before resizing.
        stream: ``true`` decodes batches from disk on demand, ``false`` decodes everything
            into memory, ``auto`` streams above 1 GiB of decoded pixels.
        workers: decoding processes (default: the usable CPUs, at most 4; 0 decodes in the
            calling process).

    Raises:
        DataError: if files are missing (and cannot be obtained) or malformed: a CSV without
            the needed columns, a bad value, a class id outside 0-42 or a missing image.
        InvalidParameterError: for an ``image_size`` below 1 or negative ``workers``.

    Example:
        >>> ds = gtsrb(data_dir="data", download=False)  # doctest: +SKIP
        >>> ds.image_shape, ds.num_classes  # doctest: +SKIP
        ((3, 48, 48), 43)
    """
    if image_size < 1:
        raise InvalidParameterError(f"image_size must be >= 1, got {image_size}")
    workers = default_workers() if workers is None else workers
    root = resolve_data_dir(data_dir)
    base = root / "GTSRB"
    train_dir = base / "Final_Training" / "Images"
    test_dir = base / "Final_Test" / "Images"
    ensure_extracted(_TRAIN_ZIP, root, train_dir, into=root, download=download)
    ensure_extracted(_TEST_ZIP, root, test_dir, into=root, download=download)
    test_csv = root / _TEST_CSV
    if not test_csv.is_file():
        test_csv = base / _TEST_CSV
        ensure_extracted(_TEST_GT_ZIP, root, test_csv, into=base, download=download)

    train = _training_annotations(train_dir)
    test = read_annotations(test_csv, test_dir)
    spec = ImageSpec(3, image_size, image_size)
    streaming = should_stream(stream, (len(train) + len(test)) * int(np.prod(spec.shape)))
    splits = {}
    for name, rows in (("train", train), ("test", test)):
        splits[name] = make_split(
            [r.path for r in rows],
            torch.tensor([r.label for r in rows], dtype=torch.int64),
            spec,
            root=base,
            boxes=[r.box for r in rows] if roi else None,
            workers=workers,
            stream=streaming,
        )
    notes = [
        count_note("GTSRB", name, len(rows), _OFFICIAL[name])
        for name, rows in (("train", train), ("test", test))
        if len(rows) != _OFFICIAL[name]
    ]
    notes.append(
        f"GTSRB images {'cropped to their annotated sign region and ' if roi else ''}resized "
        f"to {image_size}x{image_size} (bilinear); training images in a fixed seeded order"
        + ("; streamed from disk" if streaming else "")
    )
    return Dataset(
        name="gtsrb",
        train=splits["train"],
        test=splits["test"],
        classes=list(CLASS_NAMES),
        notes=notes,
    )


def _training_annotations(images_dir: Path) -> list[Annotation]:
    class_dirs = sorted(p for p in images_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not class_dirs:
        raise DataError(
            f"{images_dir} has no class folders (00000 ... 00042); delete the GTSRB folder so "
            f"robustlab extracts {_TRAIN_ZIP.file_name} again"
        )
    rows: list[Annotation] = []
    for class_dir in class_dirs:
        csv_path = class_dir / f"GT-{class_dir.name}.csv"
        found = read_annotations(csv_path, class_dir)
        expected = int(class_dir.name)
        for row in found:
            if row.label != expected:
                raise DataError(
                    f"{csv_path} gives class {row.label} for {Path(row.path).name}, but the "
                    f"file is in the folder of class {expected}; the annotations are mixed up, "
                    f"extract {_TRAIN_ZIP.file_name} again"
                )
        rows.extend(found)
    bits = np.random.PCG64(_ORDER_SEED)
    keys = np.asarray(bits.random_raw(len(rows)), dtype=np.uint64)
    return [rows[i] for i in np.argsort(keys, kind="stable")]


def read_annotations(
    csv_path: str | os.PathLike[str], images_dir: str | os.PathLike[str]
) -> list[Annotation]:
    """Read a GTSRB annotation CSV; image paths are resolved in ``images_dir``.

    Raises:
        DataError: naming the CSV (and line) if it is missing, empty, truncated (a row with
            fewer fields than the header) or not text, lacks a column, has a non-integer
            value, an empty region of interest or a class id outside 0-42, or names an image
            file that does not exist.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    fix = _extract_again(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file, delimiter=";")
            if reader.fieldnames is None:
                raise DataError(f"{csv_path} is empty; {fix}")
            header = [c.strip() for c in reader.fieldnames]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"{csv_path} lacks the column(s) {', '.join(missing)}; a GTSRB annotation "
                    f"file has the header {';'.join(COLUMNS)} (the test labels are in "
                    f"{_TEST_CSV} from {_TEST_GT_ZIP.file_name}, not in GT-final_test.test.csv)"
                )
            rows = []
            for row in reader:
                if None in row.values():  # DictReader's filler for fields the line lacks
                    given = sum(v is not None for k, v in row.items() if k is not None)
                    raise DataError(
                        f"{csv_path} line {reader.line_num} has {given} of the {len(header)} "
                        f"fields ({';'.join(COLUMNS)}): the file is truncated or damaged; {fix}"
                    )
                rows.append(_annotation(row, csv_path, reader.line_num, images_dir, fix))
    except DataError:
        raise  # a DataError is an OSError too: keep it from the clause below
    except FileNotFoundError:
        raise DataError(
            f"GTSRB annotation file not found: {csv_path}; extract the official archives "
            f"again (or delete the GTSRB folder so robustlab does)"
        ) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path} is not a readable CSV file ({err}); {fix}") from err
    except OSError as err:
        raise DataError(f"cannot read {csv_path}: {err.strerror or err}") from err
    if not rows:
        raise DataError(f"{csv_path} lists no images; {fix}")
    return rows


def _extract_again(csv_path: Path) -> str:
    """How to get an intact copy of the annotation file ``csv_path``."""
    if csv_path.name == _TEST_CSV:
        return f"delete it so robustlab extracts {_TEST_GT_ZIP.file_name} again"
    return (
        f"delete the GTSRB/Final_Training folder so robustlab extracts {_TRAIN_ZIP.file_name} again"
    )


def _annotation(
    row: dict[str, str], csv_path: Path, line: int, images_dir: Path, fix: str
) -> Annotation:
    # Surplus fields land under the key None (DictReader's restkey): ignore them.
    row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
    try:
        numbers = {c: int(row[c]) for c in COLUMNS[1:]}
    except ValueError:
        bad = {c: row[c] for c in COLUMNS[1:] if not row[c].lstrip("-").isdigit()}
        raise DataError(
            f"{csv_path} line {line}: {bad} should be whole numbers; the file is damaged: {fix}"
        ) from None
    label = numbers["ClassId"]
    if not 0 <= label < len(CLASS_NAMES):
        raise DataError(
            f"{csv_path} line {line}: class id {label} is outside 0-{len(CLASS_NAMES) - 1}"
        )
    left, upper = numbers["Roi.X1"], numbers["Roi.Y1"]
    right, lower = numbers["Roi.X2"] + 1, numbers["Roi.Y2"] + 1  # inclusive corners
    if left < 0 or upper < 0 or right <= left or lower <= upper:
        raise DataError(
            f"{csv_path} line {line}: the region of interest ({left}, {upper}) to "
            f"({right - 1}, {lower - 1}) is empty or negative"
        )
    name = row["Filename"]
    path = images_dir / name
    if not name or Path(name).name != name or not path.is_file():
        raise DataError(
            f"{csv_path} line {line} names the image {name!r}, which is not a file in "
            f"{images_dir}; the archive was not fully extracted (extract it again)"
        )
    return Annotation(str(path), label, (left, upper, right, lower))
