from __future__ import annotations

import io
import math
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from robustlab.degrade import DEGRADATIONS, JPEG, JPEG2000, codecs, create_degradation
from robustlab.errors import InvalidParameterError
from robustlab.tensors import to_uint8

# ------------------------------------------------------------------ independent references


def _pillow(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _pillow_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """One (H, W, C) uint8 image through Pillow's JPEG codec with its defaults."""
    buffer = io.BytesIO()
    _pillow(image).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer)).reshape(image.shape)


def _pillow_jpeg2000(image: np.ndarray, **options: Any) -> tuple[np.ndarray, int]:
    """One image through Pillow's JPEG 2000 codec; the decoded image and the codestream size."""
    buffer = io.BytesIO()
    _pillow(image).save(buffer, "JPEG2000", **options)
    size = buffer.tell()
    buffer.seek(0)
    return np.asarray(Image.open(buffer)).reshape(image.shape), size


def _reference(x: torch.Tensor, codec: Any) -> torch.Tensor:
    """Quantise like the degradation, run ``codec`` per image, back to [0, 1] floats."""
    images = to_uint8(x).permute(0, 2, 3, 1).numpy()
    decoded = np.stack([codec(image) for image in images])
    return torch.from_numpy(decoded).permute(0, 3, 1, 2).float().div(255)


def _images(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random batches with some structure: a smooth ramp plus noise, so codecs have work."""
    h, w = shape[2:]
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, w).expand(h, w) * torch.linspace(0.2, 1, h).unsqueeze(1)
    return (0.6 * ramp + 0.4 * torch.rand(shape, generator=g)).clamp(0, 1)


# ------------------------------------------------------------------------------------ JPEG


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(28, 28), (32, 32), (30, 17), (17, 30), (9, 40), (1, 1)])
def test_jpeg_equals_per_image_pillow(channels: int, size: tuple[int, int]) -> None:
    x = _images((40, channels, *size), seed=size[0] * size[1])
    for quality in (1, 10, 75, 100):
        y = JPEG(quality=quality)(x, torch.Generator())
        expected = _reference(x, lambda a, q=quality: _pillow_jpeg(a, q))
        assert torch.equal(y, expected), f"quality {quality}"


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_thread_chunks_and_tall_strips(channels: int) -> None:
    # 2,100 images of 32 rows need two strips (libjpeg allows 65,500 rows); 3 threads.
    images = (_images((2100, channels, 32, 8), seed=5) * 255).round().to(torch.uint8)
    images_np = images.permute(0, 2, 3, 1).numpy().copy()
    expected = np.stack([_pillow_jpeg(a, 30) for a in images_np])
    for workers in (1, 3):
        assert np.array_equal(codecs.jpeg_images(images_np, 30, workers=workers), expected)


def test_rgb_restart_segments_are_the_per_image_files() -> None:
    # The mechanism behind the exactness for colour: one strip encoded with a restart marker per
    # image, cut at the markers, gives byte for byte the file Pillow writes for each image.
    images = (
        (_images((12, 3, 32, 24), seed=7) * 255).round().byte().permute(0, 2, 3, 1).numpy().copy()
    )
    data = codecs._jpeg_bytes(images.reshape(12 * 32, 24, 3), 40, restart_marker_rows=2)
    header, start = codecs._jpeg_header(data, 32)
    segments = codecs._RESTART_MARKER.split(data[start:-2])
    for image, segment in zip(images, segments, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=40)
        assert header + segment + b"\xff\xd9" == buffer.getvalue()


def test_jpeg_quantises_to_uint8_levels_and_is_deterministic() -> None:
    degradation = create_degradation("jpeg", quality=50)
    assert not degradation.random and type(degradation).random is False
    assert DEGRADATIONS.entry("jpeg").severity == "quality"
    x = _images((5, 3, 16, 24))
    copy = x.clone()
    y = degradation(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y * 255, (y * 255).round())
    assert torch.equal(y, degradation(x, torch.Generator().manual_seed(2)))
    assert torch.equal(x, copy), "input was modified"
    assert not torch.equal(y, x)


def test_jpeg_quality_orders_the_error() -> None:
    x = _images((8, 3, 32, 32))
    errors = [float((JPEG(q)(x, torch.Generator()) - x).abs().mean()) for q in (5, 25, 50, 95)]
    assert errors == sorted(errors, reverse=True)


def test_codecs_accept_other_float_dtypes_and_empty_batches() -> None:
    x = _images((3, 1, 12, 12)).double()
    y = JPEG(40)(x, torch.Generator())
    assert y.dtype == torch.float64
    assert torch.equal(y.float(), JPEG(40)(x.float(), torch.Generator()))
    empty = torch.zeros(0, 3, 8, 8)
    assert JPEG(40)(empty, torch.Generator()).shape == empty.shape
    assert JPEG2000(ratio=10)(empty, torch.Generator()).shape == empty.shape


@pytest.mark.parametrize("quality", [0, 101, -5, 10.5, True, "high", None, float("nan")])
def test_jpeg_bad_quality(quality: object) -> None:
    with pytest.raises(
        InvalidParameterError, match=r"quality must be an integer in \[1, 100\], got"
    ):
        create_degradation("jpeg", quality=quality)


@pytest.mark.parametrize("name", ["jpeg", "jpeg2000"])
def test_codecs_need_grey_or_rgb(name: str) -> None:
    params = {"ratio": 10} if name == "jpeg2000" else {}
    with pytest.raises(InvalidParameterError, match=r"grey \(C=1\) or RGB \(C=3\).*\(2, 2, 8, 8\)"):
        create_degradation(name, **params)(torch.rand(2, 2, 8, 8), torch.Generator())


# ------------------------------------------------------------------------------- JPEG 2000


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("params", "mode"), [({"ratio": 8}, "rates"), ({"psnr": 30}, "dB")])
def test_jpeg2000_equals_per_image_pillow(
    channels: int, params: dict[str, float], mode: str
) -> None:
    x = _images((6, channels, 30, 17), seed=channels)
    options = {
        "no_jp2": True,
        "quality_mode": mode,
        "quality_layers": [float(next(iter(params.values())))],
        "irreversible": True,
        "mct": 1 if channels == 3 else 0,
    }
    y = JPEG2000(**params)(x, torch.Generator())
    assert torch.equal(y, _reference(x, lambda a: _pillow_jpeg2000(a, **options)[0]))
    assert not torch.equal(y, x)


def test_jpeg2000_reversible_wavelet_option() -> None:
    x = _images((2, 3, 16, 16))
    options = {
        "no_jp2": True,
        "quality_mode": "rates",
        "quality_layers": [6.0],
        "irreversible": False,
        "mct": 1,
    }
    y = JPEG2000(ratio=6, irreversible=False)(x, torch.Generator())
    assert torch.equal(y, _reference(x, lambda a: _pillow_jpeg2000(a, **options)[0]))
    assert not torch.equal(y, JPEG2000(ratio=6)(x, torch.Generator()))


def test_jpeg2000_worker_processes_give_the_same_result() -> None:
    images = (_images((40, 3, 16, 16), seed=3) * 255).round().to(torch.uint8)
    images_np = images.permute(0, 2, 3, 1).numpy().copy()
    options = codecs.jpeg2000_options(3, 12, None, True)
    serial = codecs.jpeg2000_images(images_np, options, workers=1)
    assert np.array_equal(codecs.jpeg2000_images(images_np, options, workers=2), serial)
    assert np.array_equal(serial[7], _pillow_jpeg2000(images_np[7], **options)[0])


def test_jpeg2000_falls_back_to_this_process_when_the_pool_breaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BrokenPool:
        def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
            raise BrokenProcessPool("a worker died")

        def shutdown(self, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(codecs, "_process_pool", lambda workers: BrokenPool())
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    options = codecs.jpeg2000_options(1, 4, None, True)
    expected = np.stack([_pillow_jpeg2000(a, **options)[0] for a in images])
    assert np.array_equal(codecs.jpeg2000_images(images, options, workers=2), expected)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("ratio", [5, 10, 20, 40])
def test_jpeg2000_codestream_has_the_requested_ratio(channels: int, ratio: float) -> None:
    # A photo-like 256 x 256 image: big enough that the ~120 header bytes do not matter.
    # OpenJPEG treats the ratio as a size cap: the codestream lands within a few percent of it,
    # sometimes up to ~15% smaller (coding passes are coarse steps), never much larger.
    rng = np.random.default_rng(ratio)
    yy, xx = np.mgrid[:256, :256]
    planes = [127 + 90 * np.sin(xx / (5 + k)) * np.cos(yy / (7 + k)) for k in range(channels)]
    noisy = np.stack(planes, axis=-1) + rng.normal(0, 8, (256, 256, channels))
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    _, size = _pillow_jpeg2000(image, **codecs.jpeg2000_options(channels, ratio, None, True))
    assert ratio * 0.97 <= image.size / size <= ratio * 1.15


def test_jpeg2000_psnr_target() -> None:
    x = _images((1, 3, 128, 128), seed=4)
    psnrs = []
    for target in (25.0, 30.0, 35.0):
        y = JPEG2000(psnr=target)(x, torch.Generator())
        mse = float((to_uint8(y).double() - to_uint8(x).double()).pow(2).mean())
        psnrs.append(10 * math.log10(255**2 / mse))
        assert psnrs[-1] == pytest.approx(target, abs=2.5)
    assert psnrs == sorted(psnrs)


def test_jpeg2000_ratio_orders_the_error_and_is_deterministic() -> None:
    degradation = create_degradation("jpeg2000", ratio=4)
    assert not degradation.random
    assert DEGRADATIONS.entry("jpeg2000").severity == "ratio"
    x = _images((4, 3, 64, 64))
    y = degradation(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, degradation(x, torch.Generator().manual_seed(2)))
    errors = [float((JPEG2000(ratio=r)(x, torch.Generator()) - x).abs().mean()) for r in (2, 8, 32)]
    assert errors == sorted(errors)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "exactly one of ratio .* and psnr .*got ratio=None, psnr=None"),
        ({"ratio": 20, "psnr": 30}, "exactly one of ratio .* and psnr .*got ratio=20, psnr=30"),
        ({"ratio": 1}, "ratio must be a finite number > 1, got 1.0"),
        ({"ratio": 0.5}, "ratio must be a finite number > 1, got 0.5"),
        ({"ratio": float("inf")}, "ratio must be a finite number > 1, got inf"),
        ({"ratio": "high"}, "ratio must be a number > 1, got 'high'"),
        ({"psnr": 0}, "psnr must be a finite number > 0 dB, got 0.0"),
        ({"psnr": float("nan")}, "psnr must be a finite number > 0 dB, got nan"),
        ({"ratio": 10, "irreversible": "yes"}, "irreversible must be true or false"),
    ],
)
def test_jpeg2000_bad_parameters(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_degradation("jpeg2000", **params)
