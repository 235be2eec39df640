"""GTSRB from folders, CSVs and .ppm images in the exact official layout, generated here."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustlab.data.base import Dataset, Split
from robustlab.data.gtsrb import CLASS_NAMES
from robustlab.data.registry import load_dataset
from robustlab.data.streaming import StreamingSplit
from robustlab.errors import DataError

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
BORDER = (0, 0, 255)
ROI = 8  # every generated sign region is 8x8, so image_size=8 with roi=True copies it exactly


def _sign(path: Path, rng: np.random.Generator, margin: tuple[int, int]) -> tuple[str, np.ndarray]:
    """Write a .ppm with a blue border around a random 8x8 sign; return its CSV fields."""
    left, top = margin
    width, height = left + ROI + 6, top + ROI + 5
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = BORDER
    sign = rng.integers(0, 256, (ROI, ROI, 3), dtype=np.uint8)
    pixels[top : top + ROI, left : left + ROI] = sign
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    # Corners are inclusive pixel coordinates.
    fields = f"{width};{height};{left};{top};{left + ROI - 1};{top + ROI - 1}"
    return fields, sign.transpose(2, 0, 1)


def _write_gtsrb(root: Path, classes: tuple[int, ...] = (0, 1, 14), per_class: int = 4,
                 tests: int = 5) -> dict[str, np.ndarray]:  # fmt: skip
    """The official layout under ``root``; returns the sign pixels by relative path."""
    rng = np.random.default_rng(0)
    signs: dict[str, np.ndarray] = {}
    base = root / "GTSRB"
    for c in classes:
        folder = base / "Final_Training" / "Images" / f"{c:05d}"
        lines = [HEADER]
        for i in range(per_class):
            name = f"{i // 2:05d}_{i % 2:05d}.ppm"
            fields, sign = _sign(folder / name, rng, (5 + i, 5 + (i % 3)))
            lines.append(f"{name};{fields};{c}")
            signs[f"Final_Training/Images/{c:05d}/{name}"] = sign
        folder.joinpath(f"GT-{c:05d}.csv").write_text("\n".join(lines) + "\n")
    test_folder = base / "Final_Test" / "Images"
    labelled, unlabelled = [HEADER], [HEADER.removesuffix(";ClassId")]
    for i in range(tests):
        name = f"{i:05d}.ppm"
        fields, sign = _sign(test_folder / name, rng, (5 + i % 2, 6))
        labelled.append(f"{name};{fields};{classes[i % len(classes)]}")
        unlabelled.append(f"{name};{fields}")
        signs[f"Final_Test/Images/{name}"] = sign
    # The test-image zip ships a CSV without class ids; the labels come from the GT zip.
    test_folder.joinpath("GT-final_test.test.csv").write_text("\n".join(unlabelled) + "\n")
    base.joinpath("GT-final_test.csv").write_text("\n".join(labelled) + "\n")
    return signs


def _load(root: Path, **params: object) -> Dataset:
    return load_dataset(
        "gtsrb", data_dir=str(root), download=False, **{"workers": 0, "image_size": 8, **params}
    )


def _relative(split: StreamingSplit) -> list[str]:
    return [str(Path(p).relative_to(Path(split.root))) for p in split.paths]


def test_gtsrb_layout_roi_crop_and_order(tmp_path: Path) -> None:
    signs = _write_gtsrb(tmp_path)
    streamed = _load(tmp_path, stream=True)
    assert isinstance(streamed.train, StreamingSplit)
    assert streamed.classes == CLASS_NAMES and streamed.num_classes == 43
    assert streamed.image_shape == (3, 8, 8)
    assert len(streamed.train) == 12 and len(streamed.test) == 5
    for split in (streamed.train, streamed.test):
        expected = np.stack([signs[key] for key in _relative(split)])
        np.testing.assert_array_equal(split.load().images.numpy(), expected)
    # Labels follow the class folders; the training order is mixed, the test order official.
    train_keys = _relative(streamed.train)
    assert streamed.train.labels.tolist() == [int(k.split("/")[2]) for k in train_keys]
    assert train_keys != sorted(train_keys)
    assert _relative(streamed.test) == [f"Final_Test/Images/{i:05d}.ppm" for i in range(5)]
    assert streamed.test.labels.tolist() == [0, 1, 14, 0, 1]

    in_memory = _load(tmp_path, stream=False)
    assert isinstance(in_memory.train, Split)
    assert torch.equal(in_memory.train.images, streamed.train.load().images)
    assert torch.equal(in_memory.train.labels, streamed.train.labels)
    assert any("train split has 12 images, not the official 39,209" in n for n in in_memory.notes)
    assert any(
        "cropped to their annotated sign region and resized to 8x8" in n for n in in_memory.notes
    )


def test_without_roi_the_border_is_kept(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path)
    ds = _load(tmp_path, roi=False)
    corners = ds.test.images[:, :, 0, 0]
    assert (corners == torch.tensor(BORDER, dtype=torch.uint8)).all()
    assert not any("cropped" in n for n in ds.notes)


def test_default_size_is_48(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path, classes=(3,), per_class=1, tests=1)
    ds = load_dataset("gtsrb", data_dir=str(tmp_path), download=False, workers=0)
    assert ds.image_shape == (3, 48, 48)


def test_test_labels_may_sit_in_the_data_directory(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path)
    shutil.move(tmp_path / "GTSRB" / "GT-final_test.csv", tmp_path / "GT-final_test.csv")
    assert len(_load(tmp_path).test) == 5


def _edit_csv(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("column", "lacks the column"),
        ("image", "names the image '00000_00001.ppm', which is not a file"),
        ("class", "class id 43 is outside 0-42"),
        ("folder", "gives class 1 for 00000_00000.ppm, but the file is in the folder of class 0"),
        ("number", "should be whole numbers"),
        ("roi", "region of interest"),
    ],
)
def test_malformed_training_csv_names_the_file(tmp_path: Path, damage: str, match: str) -> None:
    _write_gtsrb(tmp_path)
    folder = tmp_path / "GTSRB" / "Final_Training" / "Images" / "00000"
    csv_path = folder / "GT-00000.csv"
    if damage == "column":
        _edit_csv(csv_path, ";ClassId", "")
    elif damage == "image":
        (folder / "00000_00001.ppm").unlink()
    elif damage == "class":
        _edit_csv(
            csv_path, "00000_00000.ppm;19;18;5;5;12;12;0", "00000_00000.ppm;19;18;5;5;12;12;43"
        )
    elif damage == "folder":
        _edit_csv(
            csv_path, "00000_00000.ppm;19;18;5;5;12;12;0", "00000_00000.ppm;19;18;5;5;12;12;1"
        )
    elif damage == "number":
        _edit_csv(csv_path, "00000_00000.ppm;19;18", "00000_00000.ppm;19;x")
    else:
        _edit_csv(csv_path, "00000_00000.ppm;19;18;5;5;12;12", "00000_00000.ppm;19;18;5;5;4;12")
    with pytest.raises(DataError, match=match) as err:
        _load(tmp_path)
    assert str(csv_path) in str(err.value)


def _cut_last_row(text: str, fields: int, chars: int = 0) -> str:
    """``text`` cut after ``fields`` fields and ``chars`` more characters of its last row, as
    an interrupted copy leaves it."""
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    kept = ";".join(last.split(";")[:fields])
    return text[: text.rindex(last)] + kept + last[len(kept) : len(kept) + chars]


@pytest.mark.parametrize("which", ["class", "test"])
@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("mid-row", r"line (5|6) has 3 of the 8 fields .*: the file is truncated or damaged"),
        ("mid-name", r"line (5|6) has 1 of the 8 fields .*: the file is truncated or damaged"),
        ("no-class", r"line (5|6): \{'ClassId': ''\} should be whole numbers"),
        ("empty", "is empty"),
        ("header-only", "lists no images"),
        ("binary", r"is not a readable CSV file \('utf-8' codec can't decode"),
    ],
)
def test_truncated_or_malformed_csv_names_the_file(
    tmp_path: Path, which: str, damage: str, match: str
) -> None:
    _write_gtsrb(tmp_path)
    base = tmp_path / "GTSRB"
    if which == "class":
        csv_path = base / "Final_Training" / "Images" / "00001" / "GT-00001.csv"
        archive = "GTSRB_Final_Training_Images.zip"
    else:
        csv_path = base / "GT-final_test.csv"
        archive = "GTSRB_Final_Test_GT.zip"
    text = csv_path.read_text()
    if damage == "mid-row":
        csv_path.write_text(_cut_last_row(text, 3))
    elif damage == "mid-name":
        csv_path.write_text(_cut_last_row(text, 0, 5))
    elif damage == "no-class":
        csv_path.write_text(text.rstrip("\n").rstrip("0123456789"))
    elif damage == "empty":
        csv_path.write_bytes(b"")
    elif damage == "header-only":
        csv_path.write_text(HEADER + "\n")
    else:
        csv_path.write_bytes(text.encode()[:70] + b"\xff\xfe" + text.encode()[70:])
    with pytest.raises(DataError, match=match) as err:
        _load(tmp_path)
    message = str(err.value)
    assert message.startswith(f"dataset 'gtsrb': {csv_path}")  # named once, not wrapped twice
    assert f"extracts {archive} again" in message


def test_test_csv_without_class_ids_is_refused(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path)
    images = tmp_path / "GTSRB" / "Final_Test" / "Images"
    shutil.copy(images / "GT-final_test.test.csv", tmp_path / "GTSRB" / "GT-final_test.csv")
    with pytest.raises(DataError, match=re.escape("lacks the column(s) ClassId")) as err:
        _load(tmp_path)
    assert "GT-final_test.test.csv" in str(err.value)


@pytest.mark.parametrize("stream", [False, True])
def test_truncated_image_names_the_file(tmp_path: Path, stream: bool) -> None:
    _write_gtsrb(tmp_path)
    image = tmp_path / "GTSRB" / "Final_Test" / "Images" / "00003.ppm"
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(DataError, match="cannot decode image") as err:
        ds = _load(tmp_path, stream=stream)
        for _ in ds.test.batches(2):
            pass
    assert str(image) in str(err.value)


def test_missing_data_offline_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        _load(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "GTSRB" / "Final_Training" / "Images") in message
    assert "GTSRB_Final_Training_Images.zip" in message
    assert "https://sid.erda.dk/public/archives/" in message
    assert "downloading is switched off" in message
    assert "--data-dir" in message and "ROBUSTLAB_DATA" in message


def test_missing_test_labels_offline(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path)
    (tmp_path / "GTSRB" / "GT-final_test.csv").unlink()
    with pytest.raises(DataError, match=re.escape("GTSRB_Final_Test_GT.zip")) as err:
        _load(tmp_path)
    assert str(tmp_path / "GTSRB" / "GT-final_test.csv") in str(err.value)


def _zip_tree(archive: Path, member: Path, strip: Path) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted([member, *member.rglob("*")] if member.is_dir() else [member]):
            name = str(path.relative_to(strip)) + ("/" if path.is_dir() else "")
            if path.is_file():
                zf.write(path, name)
            else:
                zf.writestr(name, b"")


def test_official_zips_are_extracted(tmp_path: Path) -> None:
    source = tmp_path / "source"
    signs = _write_gtsrb(source)
    data = tmp_path / "data"
    data.mkdir()
    base = source / "GTSRB"
    _zip_tree(data / "GTSRB_Final_Training_Images.zip", base / "Final_Training", source)
    _zip_tree(data / "GTSRB_Final_Test_Images.zip", base / "Final_Test", source)
    _zip_tree(data / "GTSRB_Final_Test_GT.zip", base / "GT-final_test.csv", base)
    ds = _load(data, stream=True)
    assert len(ds.train) == len(signs) - 5 and len(ds.test) == 5
    assert (data / "GTSRB" / "GT-final_test.csv").is_file()
    assert (data / "GTSRB" / "Final_Test" / "Images" / "GT-final_test.test.csv").is_file()
