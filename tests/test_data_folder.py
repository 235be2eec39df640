"""``folder:PATH`` datasets, the streaming split, and the dataset name syntax of studies."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from robustlab.data import streaming
from robustlab.data.base import Dataset, Split, SplitLike
from robustlab.data.registry import check_dataset, load_dataset, resolve_dataset_name
from robustlab.data.streaming import ImageSpec, StreamingSplit
from robustlab.errors import ConfigError, DataError, InvalidParameterError, UnknownNameError
from robustlab.study.config import DatasetConfig, parse_config
from robustlab.train.loop import TrainingRecipe, build_model, make_optimizer, train_epochs


def _write_folder(
    top: Path,
    classes: dict[str, int],
    *,
    size: tuple[int, int] = (6, 6),
    mode: str = "L",
    ext: str = "png",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random images per class; returns the (C, H, W) pixels by relative path."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        (top / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            relative = f"{name}/img{i:03d}.{ext}"
            Image.fromarray(pixels, mode).save(top / relative)
            written[str(top.name) + "/" + relative] = (
                pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)
            )
    return written


def _load(path: Path, **params: Any) -> Dataset:
    return load_dataset(f"folder:{path}", **{"workers": 0, **params})


def _keys(split: StreamingSplit) -> list[str]:
    return [
        f"{Path(p).parent.parent.name}/{Path(p).parent.name}/{Path(p).name}" for p in split.paths
    ]


# --- layouts -------------------------------------------------------------------------------


def test_single_tree_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    top = tmp_path / "pics"
    pixels = _write_folder(top, {"b": 7, "a": 10, "c": 2})
    ds = _load(top, stream=True)
    assert ds.classes == ["a", "b", "c"]
    assert ds.image_shape == (1, 6, 6)  # all grey, own size
    test_counts = torch.bincount(ds.test.labels, minlength=3).tolist()
    assert test_counts == [2, 1, 1]  # round(10 * 0.2), round(7 * 0.2), at least one of two
    assert len(ds.train) + len(ds.test) == 19
    assert not set(ds.train.paths) & set(ds.test.paths)
    for split in (ds.train, ds.test):
        assert isinstance(split, StreamingSplit)
        expected = np.stack([pixels[k] for k in _keys(split)])
        np.testing.assert_array_equal(split.load().images.numpy(), expected)
        assert split.labels.tolist() == [ds.classes.index(k.split("/")[1]) for k in _keys(split)]
    again = _load(top, stream=True)
    assert again.test.paths == ds.test.paths
    other = _load(top, stream=True, seed=1)
    assert other.test.paths != ds.test.paths
    assert any("one tree split 80% / 20% per class (seed 0)" in n for n in ds.notes)


def test_train_test_layout(tmp_path: Path) -> None:
    top = tmp_path / "set"
    _write_folder(top / "train", {"cat": 3, "dog": 4})
    _write_folder(top / "test", {"dog": 2}, seed=1)
    ds = _load(top)
    assert ds.classes == ["cat", "dog"]
    assert len(ds.train) == 7 and ds.test.labels.tolist() == [1, 1]
    assert isinstance(ds.train, Split)
    assert any("train/ and test/ folders" in n for n in ds.notes)


def test_test_class_unknown_to_train_is_refused(tmp_path: Path) -> None:
    top = tmp_path / "set"
    _write_folder(top / "train", {"cat": 3})
    _write_folder(top / "test", {"cow": 2})
    with pytest.raises(DataError, match=r"class folders that .* lacks: \['cow'\]"):
        _load(top)


def test_train_without_test_is_refused(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set" / "train", {"cat": 3})
    with pytest.raises(DataError, match="has a 'train' folder but no 'test' folder"):
        _load(tmp_path / "set")


def test_colour_detection_and_forced_channels(tmp_path: Path) -> None:
    top = tmp_path / "mixed"
    _write_folder(top, {"grey": 3})
    _write_folder(top, {"rgb": 3}, mode="RGB", seed=2)
    assert _load(top).image_shape == (3, 6, 6)
    grey = _load(top, channels=1)
    assert grey.image_shape == (1, 6, 6)
    # Forced grey uses Pillow's ITU-R 601 luma, grey images stay as they are.
    rgb_path = sorted((top / "rgb").iterdir())[0]
    luma = torch.from_numpy(np.array(Image.open(rgb_path).convert("L")))
    everything = torch.cat([grey.train.images, grey.test.images])
    assert any(torch.equal(image[0], luma) for image in everything)


def test_jpeg_of_mixed_sizes_needs_image_size(tmp_path: Path) -> None:
    top = tmp_path / "photos"
    _write_folder(top, {"x": 3}, size=(10, 8), mode="RGB", ext="jpg")
    _write_folder(top, {"y": 3}, size=(12, 12), mode="RGB", ext="jpeg")
    with pytest.raises(DataError, match=r"2 different sizes .*set image_size"):
        _load(top)
    ds = _load(top, image_size=5)
    assert ds.image_shape == (3, 5, 5)
    assert any("resized to 5x5, RGB" in n for n in ds.notes)


def test_other_formats_and_ignored_files(tmp_path: Path) -> None:
    top = tmp_path / "formats"
    for ext in ("bmp", "ppm", "webp", "tif"):
        _write_folder(top, {ext: 2}, mode="RGB", ext=ext)
    (top / "bmp" / "notes.txt").write_text("not an image")
    (top / "bmp" / ".hidden.png").write_bytes(b"ignored")
    nested = top / "ppm" / "deeper"
    nested.mkdir()
    Image.new("RGB", (6, 6)).save(nested / "n.png")
    ds = _load(top)
    assert ds.classes == ["bmp", "ppm", "tif", "webp"]
    assert len(ds.train) + len(ds.test) == 9
    assert any("1 files in" in n and "ignored" in n for n in ds.notes)


def test_sixteen_bit_grey_is_scaled(tmp_path: Path) -> None:
    top = tmp_path / "deep"
    values = np.array([[0, 256, 65535, 4096]], dtype=np.uint16)
    for label in ("a", "b"):  # a classifier's dataset needs two classes
        (top / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(values).save(top / label / f"{i}.png")
    ds = _load(top)
    assert ds.image_shape == (1, 1, 4)
    assert ds.test.images[0, 0, 0].tolist() == [0, 1, 255, 16]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("garbage", "cannot read image"),
        ("empty", "cannot read image"),
        ("truncated", "cannot decode image"),
    ],
)
def test_unreadable_image_names_the_file(tmp_path: Path, damage: str, match: str) -> None:
    top = tmp_path / "pics"
    _write_folder(top, {"a": 4, "b": 4}, size=(32, 32))
    bad = top / "b" / "img002.png"
    data = bad.read_bytes()
    bad.write_bytes(
        {"garbage": b"<html>", "empty": b"", "truncated": data[: len(data) // 2]}[damage]
    )
    with pytest.raises(DataError, match=match) as err:
        _load(top)
    assert str(bad) in str(err.value)


def test_truncated_image_in_a_stream_fails_when_decoded(tmp_path: Path) -> None:
    top = tmp_path / "pics"
    _write_folder(top, {"a": 4, "b": 4}, size=(32, 32))
    bad = top / "a" / "img001.png"
    bad.write_bytes(bad.read_bytes()[:120])
    ds = _load(top, stream=True)  # headers are fine: nothing decoded yet
    with pytest.raises(DataError, match="cannot decode image") as err:
        for split in (ds.train, ds.test):
            list(split.batches(3))
    assert str(bad) in str(err.value)


def test_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found") as err:
        _load(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "flat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="has no class folders"):
        _load(tmp_path / "flat")
    _write_folder(tmp_path / "gap", {"a": 3})
    (tmp_path / "gap" / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images") as err:
        _load(tmp_path / "gap")
    assert str(tmp_path / "gap" / "empty") in str(err.value)
    _write_folder(tmp_path / "single", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="no test images"):
        _load(tmp_path / "single")


@pytest.mark.parametrize(
    "params",
    [
        {"image_size": 0},
        {"channels": 2},
        {"test_fraction": 1.0},
        {"test_fraction": 0},
        {"stream": "sometimes"},
        {"workers": -1},
    ],
)
def test_bad_parameters(tmp_path: Path, params: dict[str, Any]) -> None:
    _write_folder(tmp_path / "pics", {"a": 3})
    with pytest.raises(InvalidParameterError):
        _load(tmp_path / "pics", **params)


def test_relative_path_is_looked_up_in_the_data_directory(tmp_path: Path) -> None:
    _write_folder(tmp_path / "data" / "mine", {"a": 3, "b": 3})
    ds = load_dataset("folder:mine", data_dir=str(tmp_path / "data"), workers=0)
    assert ds.classes == ["a", "b"]
    assert ds.name == "folder:mine"


# --- streaming -----------------------------------------------------------------------------


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    top = tmp_path / "pictures"
    _write_folder(top, {str(d): 4 for d in range(10)}, size=(28, 28))
    return top


def test_streaming_equals_in_memory_in_any_order(pictures: Path) -> None:
    streamed = _load(pictures, stream=True)
    memory = _load(pictures, stream=False)
    assert isinstance(streamed.train, StreamingSplit) and isinstance(memory.train, Split)
    assert streamed.image_shape == memory.image_shape == (1, 28, 28)
    order = torch.randperm(len(memory.train), generator=torch.Generator().manual_seed(5))
    for (xs, ys), (xm, ym) in zip(
        streamed.train.batches(7, order=order), memory.train.batches(7, order=order), strict=True
    ):
        assert torch.equal(xs, xm) and torch.equal(ys, ym)
        assert xs.dtype == torch.float32 and float(xs.max()) <= 1.0
    assert [len(y) for _, y in streamed.test.batches(3)] == [3, 3, 3, 1]


def test_worker_processes_decode_the_same_batches(pictures: Path) -> None:
    streamed = _load(pictures, stream=True)
    split = streamed.train
    assert isinstance(split, StreamingSplit)
    parallel = StreamingSplit(split.paths, split.labels, split.spec, root=split.root, workers=2)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))
    state = torch.random.get_rng_state()
    for (xa, ya), (xb, yb) in zip(
        split.batches(5, order=order), parallel.batches(5, order=order), strict=True
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Streaming draws nothing from the global generator (dropout streams stay put).
    assert torch.equal(torch.random.get_rng_state(), state)
    assert parallel.fingerprint() == split.fingerprint()


def test_training_on_a_stream_equals_training_in_memory(pictures: Path) -> None:
    streamed, memory = _load(pictures, stream=True), _load(pictures, stream=False)
    recipe = TrainingRecipe(
        architecture="lin2022_cnn", dataset="pictures", epochs=1, batch_size=10, learning_rate=1e-3
    )
    weights = []
    for data in (streamed, memory):
        model = build_model(recipe)
        optimizer = make_optimizer(recipe, model)
        train_epochs(model, optimizer, data.train, recipe, start_epoch=0, end_epoch=1)
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights, strict=True):
        assert torch.equal(a, b)


def test_streaming_fingerprint(pictures: Path, tmp_path: Path) -> None:
    ds = _load(pictures, stream=True)
    first = ds.train.fingerprint()
    assert first == _load(pictures, stream=True).train.fingerprint()
    assert ds.train.subset(5).fingerprint() != first
    # A copy elsewhere keeps the fingerprint; changing one file's bytes changes it.
    copy = tmp_path / "copy"
    shutil.copytree(pictures, copy)
    assert _load(copy, stream=True).train.fingerprint() == first
    target = Path(ds.train.paths[0].replace(str(pictures), str(copy)))
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(target)
    assert _load(copy, stream=True).train.fingerprint() != first
    assert _load(pictures, stream=True, image_size=16).train.fingerprint() != first


def test_subset_keeps_streaming(pictures: Path) -> None:
    ds = _load(pictures, stream=True)
    part = ds.test.subset(3)
    assert isinstance(part, StreamingSplit) and len(part) == 3
    assert isinstance(part, SplitLike)
    assert part.labels.tolist() == ds.test.labels[:3].tolist()
    assert ds.test.subset(None) is ds.test


def test_auto_streams_above_the_threshold(pictures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(_load(pictures).train, Split)
    monkeypatch.setattr(streaming, "STREAM_THRESHOLD_BYTES", 40 * 28 * 28 - 1)
    ds = _load(pictures)
    assert isinstance(ds.train, StreamingSplit)
    assert any("streamed from disk" in n for n in ds.notes)


def test_crop_box_and_spec_validation(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(pixels).save(path)
    cropped = streaming.decode_image(str(path), ImageSpec(1, 3, 2), box=(2, 1, 4, 4))
    np.testing.assert_array_equal(cropped[0], pixels[1:4, 2:4])
    with pytest.raises(DataError, match="is empty"):
        streaming.decode_image(str(path), ImageSpec(1, 3, 3), box=(9, 9, 12, 12))
    with pytest.raises(InvalidParameterError):
        ImageSpec(2, 4, 4)


# --- names and study configuration ----------------------------------------------------------


def test_dataset_name_syntax() -> None:
    assert resolve_dataset_name("folder:/a/b:c") == ("folder", {"path": "/a/b:c"})
    with pytest.raises(InvalidParameterError, match="takes no path"):
        resolve_dataset_name("mnist:/x")
    with pytest.raises(InvalidParameterError, match="empty path"):
        resolve_dataset_name("folder:")
    with pytest.raises(UnknownNameError, match="unknown dataset 'foldr'"):
        resolve_dataset_name("foldr:/x")
    with pytest.raises(InvalidParameterError, match="needs parameter 'path'"):
        check_dataset("folder")
    with pytest.raises(InvalidParameterError, match="already gives 'path'"):
        check_dataset("folder:/x", {"path": "/y"})
    with pytest.raises(InvalidParameterError, match="--data-dir"):
        check_dataset("cifar10", {"data_dir": "/x"})
    check_dataset("gtsrb", {"image_size": 32, "roi": False, "stream": True})


def test_dataset_config_accepts_folder_and_params() -> None:
    config = DatasetConfig.model_validate(
        {"name": "folder:/tmp/x", "params": {"image_size": 28, "stream": "auto"}}
    )
    assert config.params == {"image_size": 28, "stream": "auto"}
    assert config.model_dump()["params"] == {"image_size": 28, "stream": "auto"}
    # Without params the dump is what it was before params existed (stable cell keys).
    assert DatasetConfig(name="mnist", test_limit=5).model_dump() == {
        "name": "mnist",
        "test_limit": 5,
        "train_limit": None,
    }


def test_study_rejects_bad_dataset_params() -> None:
    study = {
        "name": "s",
        "dataset": {"name": "svhn", "params": {"extras": True}},
        "models": [{"name": "m", "architecture": "lin2022_cnn"}],
    }
    with pytest.raises(
        ConfigError, match=r"dataset: .*unknown parameter of dataset 'svhn' 'extras'"
    ):
        parse_config(study)
    study["dataset"] = {"name": "mnist:/x"}
    with pytest.raises(ConfigError, match=r"dataset\.name: .*takes no path"):
        parse_config(study)
