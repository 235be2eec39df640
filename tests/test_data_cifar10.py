"""CIFAR-10 from files in the exact official binary format, generated here."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.data import cifar10 as cifar_module
from robustlab.data.registry import load_dataset
from robustlab.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _records(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    raw = np.concatenate([labels[:, None], images.reshape(count, -1)], axis=1).tobytes()
    return images, labels, raw


def _write_cifar(root: Path, count: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, name in enumerate(BATCHES):
        images, labels, raw = _records(count, seed)
        (folder / name).write_bytes(raw)
        written[name] = (images, labels)
    # The official meta file ends with blank lines.
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return written


def test_cifar10_reads_the_binary_format(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path)
    ds = load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert ds.classes == CLASSES
    assert len(ds.train) == 30 and len(ds.test) == 6
    assert ds.image_shape == (3, 32, 32)
    train_images = np.concatenate([written[n][0] for n in BATCHES[:5]])
    train_labels = np.concatenate([written[n][1] for n in BATCHES[:5]])
    np.testing.assert_array_equal(ds.train.images.numpy(), train_images)
    np.testing.assert_array_equal(ds.train.labels.numpy(), train_labels)
    np.testing.assert_array_equal(ds.test.images.numpy(), written["test_batch.bin"][0])
    assert ds.train.labels.dtype == torch.int64
    assert any("train split has 30 images, not the official 50,000" in n for n in ds.notes)
    assert any("test split has 6 images, not the official 10,000" in n for n in ds.notes)


def test_record_layout_is_label_then_red_green_blue_planes(tmp_path: Path) -> None:
    record = np.zeros(3073, dtype=np.uint8)
    record[0] = 9
    record[1 : 1 + 1024] = 10  # red plane
    record[1 + 1024 : 1 + 2048] = 20  # green plane
    record[1 + 2048 + 32 * 5 + 7] = 99  # blue pixel at row 5, column 7
    path = tmp_path / "one.bin"
    path.write_bytes(record.tobytes())
    images, labels = cifar_module.read_batch(path)
    assert labels.tolist() == [9]
    assert (images[0, 0] == 10).all() and (images[0, 1] == 20).all()
    assert images[0, 2, 5, 7] == 99 and images[0, 2].sum() == 99


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("truncate", "not a positive multiple of 3,073"),
        ("extra", "not a positive multiple of 3,073"),
        ("empty", "0 bytes"),
        ("label", "record 2 has label 10, outside 0-9"),
    ],
)
def test_malformed_batch_names_the_file(tmp_path: Path, damage: str, match: str) -> None:
    _write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-100]
    elif damage == "extra":
        raw += b"\x00"
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[2 * 3073] = 10
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=match) as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert str(path) in str(err.value)


def test_meta_file_with_wrong_number_of_names(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    meta = tmp_path / "cifar-10-batches-bin" / "batches.meta.txt"
    meta.write_text("\n".join(CLASSES[:9]))
    with pytest.raises(DataError, match="holds 9 non-empty lines") as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert str(meta) in str(err.value)


def test_missing_data_offline_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-bin") in message
    assert str(tmp_path / "cifar-10-binary.tar.gz") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message
    assert "downloading is switched off" in message
    assert "--data-dir" in message and "ROBUSTLAB_DATA" in message
    assert list(tmp_path.iterdir()) == []


def test_incomplete_folder_names_the_missing_file(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    missing = tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin"
    missing.unlink()
    with pytest.raises(DataError, match="CIFAR-10 file not found") as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert str(missing) in str(err.value)


def _archive_bytes(tmp_path: Path) -> bytes:
    source = tmp_path / "source"
    _write_cifar(source)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return buffer.getvalue()


def test_local_archive_is_extracted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-binary.tar.gz").write_bytes(_archive_bytes(tmp_path))
    ds = load_dataset("cifar10", data_dir=str(data), download=False)
    assert len(ds.train) == 30
    assert (data / "cifar-10-batches-bin" / "test_batch.bin").is_file()


def test_unsafe_archive_is_refused_and_writes_nothing_outside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "cifar-10-binary.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.bin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DataError, match="is unsafe"):
        load_dataset("cifar10", data_dir=str(data), download=False)
    assert not (tmp_path / "escaped.bin").exists()
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-binary.tar.gz"]


def test_download_verifies_and_extracts(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = http_root
    payload = _archive_bytes(tmp_path)
    (root / "cifar-10-binary.tar.gz").write_bytes(payload)
    source = dataclasses.replace(
        cifar_module._SOURCE,
        url=url + "cifar-10-binary.tar.gz",
        md5=hashlib.md5(payload).hexdigest(),
    )
    monkeypatch.setattr(cifar_module, "_SOURCE", source)
    data = tmp_path / "data"
    ds = load_dataset("cifar10", data_dir=str(data), download=True)
    assert ds.classes == CLASSES and len(ds.test) == 6


def test_download_with_bad_checksum_is_refused(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = http_root
    (root / "cifar-10-binary.tar.gz").write_bytes(_archive_bytes(tmp_path))
    source = dataclasses.replace(
        cifar_module._SOURCE, url=url + "cifar-10-binary.tar.gz", md5="0" * 32
    )
    monkeypatch.setattr(cifar_module, "_SOURCE", source)
    data = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=str(data), download=True)
    assert list(data.iterdir()) == []
