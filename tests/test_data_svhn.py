"""SVHN from MATLAB v5 .mat files in the official format-2 layout, generated here."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from robustlab.data import svhn as svhn_module
from robustlab.data.registry import load_dataset
from robustlab.errors import DataError


def _mat(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
    y = rng.integers(1, 11, (count, 1), dtype=np.uint8)
    y[0, 0] = 10  # the digit 0, as SVHN writes it
    return {"X": x, "y": y}


def _write_svhn(root: Path, counts: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    folder = root / "SVHN"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (split, count) in enumerate(counts.items()):
        contents = _mat(count, seed)
        scipy.io.savemat(folder / f"{split}_32x32.mat", contents)
        written[split] = contents
    return written


def _expected(contents: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return contents["X"].transpose(3, 2, 0, 1), contents["y"][:, 0].astype(np.int64) % 10


def test_svhn_reads_format_2(tmp_path: Path) -> None:
    written = _write_svhn(tmp_path, {"train": 7, "test": 5})
    ds = load_dataset("svhn", data_dir=str(tmp_path), download=False)
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.image_shape == (3, 32, 32)
    for split, part in (("train", ds.train), ("test", ds.test)):
        images, labels = _expected(written[split])
        np.testing.assert_array_equal(part.images.numpy(), images)
        np.testing.assert_array_equal(part.labels.numpy(), labels)
    assert ds.train.labels[0] == 0  # label 10 became digit 0
    assert set(ds.train.labels.tolist()) <= set(range(10))
    assert any("train split has 7 images, not the official 73,257" in n for n in ds.notes)


def test_pixel_layout_is_height_width_channel_count(tmp_path: Path) -> None:
    x = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    x[4, 9, 2, 1] = 200  # row 4, column 9, blue, second image
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(path, {"X": x, "y": np.array([[1], [2]], dtype=np.uint8)})
    images, labels = svhn_module.read_mat(path)
    assert images[1, 2, 4, 9] == 200 and images.sum() == 200
    assert labels.tolist() == [1, 2]


def test_extra_is_merged_into_train(tmp_path: Path) -> None:
    written = _write_svhn(tmp_path, {"train": 4, "test": 3, "extra": 6})
    ds = load_dataset("svhn", data_dir=str(tmp_path), download=False, extra=True)
    assert len(ds.train) == 10 and len(ds.test) == 3
    extra_images, _ = _expected(written["extra"])
    np.testing.assert_array_equal(ds.train.images[4:].numpy(), extra_images)
    assert any("includes the extra split (6 easier digits)" in n for n in ds.notes)
    without = load_dataset("svhn", data_dir=str(tmp_path), download=False)
    assert len(without.train) == 4


def _damaged(path: Path, problem: str) -> None:
    contents: dict[str, Any] = _mat(4, 0)
    if problem == "keys":
        contents = {"images": contents["X"], "y": contents["y"]}
    elif problem == "shape":
        contents["X"] = np.zeros((28, 28, 3, 4), dtype=np.uint8)
    elif problem == "dtype":
        contents["X"] = contents["X"].astype(np.float64)
    elif problem == "count":
        contents["y"] = contents["y"][:3]
    elif problem == "zero":
        contents["y"][2, 0] = 0
    elif problem == "eleven":
        contents["y"][1, 0] = 11
    scipy.io.savemat(path, contents)
    if problem == "truncate":
        path.write_bytes(path.read_bytes()[:2000])
    elif problem == "garbage":
        path.write_bytes(b"<html>not found</html>" * 20)
    elif problem == "v73":
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ")
        path.write_bytes(header + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * 512)


@pytest.mark.parametrize(
    ("problem", "match"),
    [
        ("keys", "has no variable 'X'"),
        ("shape", r"X has shape \(28, 28, 3, 4\)"),
        ("dtype", "type float64, expected uint8"),
        ("count", r"y has shape \(3, 1\), expected \(4, 1\)"),
        ("zero", "label 0 of image 2 is outside 1-10"),
        ("eleven", "label 11 of image 1 is outside 1-10"),
        ("truncate", "not a readable MATLAB v5 .mat file"),
        ("garbage", "not a readable MATLAB v5 .mat file"),
        ("v73", r"MATLAB v7.3 \(HDF5\)"),
    ],
)
def test_malformed_mat_names_the_file(tmp_path: Path, problem: str, match: str) -> None:
    _write_svhn(tmp_path, {"train": 4, "test": 3})
    path = tmp_path / "SVHN" / "test_32x32.mat"
    _damaged(path, problem)
    with pytest.raises(DataError, match=match) as err:
        load_dataset("svhn", data_dir=str(tmp_path), download=False)
    assert str(path) in str(err.value)


def test_missing_file_offline_names_path_and_fix(tmp_path: Path) -> None:
    _write_svhn(tmp_path, {"train": 4})
    with pytest.raises(DataError) as err:
        load_dataset("svhn", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert str(tmp_path / "SVHN" / "test_32x32.mat") in message
    assert "http://ufldl.stanford.edu/housenumbers/test_32x32.mat" in message
    assert "downloading is switched off" in message
    assert "--data-dir" in message and "ROBUSTLAB_DATA" in message


def test_missing_extra_offline(tmp_path: Path) -> None:
    _write_svhn(tmp_path, {"train": 4, "test": 3})
    with pytest.raises(DataError, match=r"extra_32x32\.mat"):
        load_dataset("svhn", data_dir=str(tmp_path), download=False, extra=True)


def test_missing_files_are_downloaded_and_verified(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = http_root
    _write_svhn(root, {"train": 4, "test": 3})
    md5 = {
        split: hashlib.md5((root / "SVHN" / f"{split}_32x32.mat").read_bytes()).hexdigest()
        for split in ("train", "test")
    }
    monkeypatch.setattr(svhn_module, "_BASE_URL", url + "SVHN/")
    monkeypatch.setattr(svhn_module, "_MD5", {**svhn_module._MD5, **md5})
    data = tmp_path / "data"
    ds = load_dataset("svhn", data_dir=str(data), download=True)
    assert len(ds.train) == 4 and len(ds.test) == 3
    assert (data / "SVHN" / "train_32x32.mat").is_file()

    monkeypatch.setattr(svhn_module, "_MD5", {**svhn_module._MD5, "extra": "0" * 32})
    (root / "SVHN" / "extra_32x32.mat").write_bytes(b"tampered")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("svhn", data_dir=str(data), download=True, extra=True)
    assert not (data / "SVHN" / "extra_32x32.mat").exists()
