"""Lossy codecs: JPEG (libjpeg through Pillow) and JPEG 2000 (OpenJPEG through Pillow).

Both quantise the batch to ``uint8`` (:func:`robustlab.tensors.to_uint8`), run the real codec on
every image, and return the decoded pixels divided by 255. Grey batches (``C = 1``) are coded as
one-component images, colour batches (``C = 3``) as RGB.

**JPEG.** The output is bit-identical to coding each ``uint8`` image on its own with Pillow's
defaults, ``Image.save(buf, "JPEG", quality=q)`` and ``Image.open(buf)`` (baseline, standard
Huffman tables, 4:2:0 chroma subsampling for RGB, libjpeg's default DCT and "fancy" chroma
upsampling when decoding). It is much faster than that loop because baseline JPEG codes each
MCU (8 x 8 pixels for grey, 16 x 16 for 4:2:0 colour) on its own after libjpeg pads the image
by repeating its last row and column:

- the images of a chunk are edge-padded to a multiple of the MCU height and stacked into one
  tall strip that is encoded in one call; each MCU sees exactly the pixels it sees when its
  image is coded alone, so every quantised coefficient is the same;
- grey: the strip is decoded in one call and cut back into images (decoding is per 8 x 8 block);
- RGB: the decoder's fancy upsampling interpolates chroma across MCU boundaries, so a decoded
  strip differs from per-image decoding on the first and last rows of each image. The strip is
  therefore encoded with a restart marker at each image boundary, which resets the DC
  predictors and byte-aligns the entropy-coded data. The segment between two markers, wrapped
  in a per-image header (same tables, its own height), is the file Pillow writes for that image
  alone (byte for byte when the height is a multiple of 16; otherwise only blocks that lie
  wholly below the image differ) and is decoded on its own;
- RGB images of even height that is not a multiple of 16 are encoded one by one: there libjpeg
  pads the chroma plane by repeating its last *chroma* row, which no pixel padding reproduces.

**JPEG 2000.** Each image is coded on its own (OpenJPEG's rate allocation and the codestream
headers depend on the whole image, so images cannot share a codestream) as a raw J2K codestream
(``no_jp2=True``) with one quality layer, either at a compression ratio (``quality_mode="rates"``)
or at a target PSNR (``quality_mode="dB"``). Lossy JPEG 2000 is normally coded with the
irreversible 9/7 wavelet and, for RGB, the irreversible colour transform (YCbCr); Pillow's
defaults are the reversible 5/3 wavelet (its lossless path) without a colour transform, so this
module passes ``irreversible=True`` (a parameter) and ``mct=1`` for RGB. Pillow's other defaults are
kept (64 x 64 code blocks, LRCP order, number of resolutions reduced to fit small images). The
ratio is OpenJPEG's: raw bytes (``H * W * C``) over codestream bytes, headers included. A
codestream always carries about 120 bytes of headers, so tiny images cannot reach high ratios
(a 28 x 28 grey image is 784 bytes: 20:1 would be 39 bytes); OpenJPEG then emits what fits,
typically an almost empty codestream (MNIST at 20:1 decodes to about 13 dB PSNR, a nearly flat
grey). For MNIST- and CIFAR-size images a PSNR target is the more meaningful severity.

**Cores.** Pillow releases the GIL while libjpeg decodes but not while it encodes into memory,
and holds it throughout OpenJPEG coding. JPEG therefore runs chunks on a thread pool, one thread per
core this process may use (the encoding of a strip is one short call; the decoding runs in
parallel). JPEG 2000 runs chunks on
a pool of forked worker processes on Linux (started on first use and kept); elsewhere, or when
the pool cannot be used, it codes in the calling thread.

Speed: against the fastest peer in the same run (``benchmarks/PEERS.md``, 1,024 images, one
torch thread, idle 2-core machine), JPEG at quality 10 is 1.3-1.8x OpenCV's per-image
``imencode`` / ``imdecode`` on 28x28 grey and 1.1-1.3x on 32x32 RGB; JPEG 2000 at 20:1 is
1.7-1.9x Pillow/OpenJPEG per image (two worker processes). Colour JPEG is bound by libjpeg's
per-image decoder set-up, about 22 us an image through Pillow and 10 us through OpenCV's
``imdecode``, which is why colour images are decoded there; both link libjpeg-turbo with the
same default (islow) IDCT and fancy upsampling, and the tests compare every configuration with
Pillow pixel for pixel, so an OpenCV build that decoded differently would fail them.

Example:
    >>> import torch
    >>> x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = JPEG(quality=10)(x, torch.Generator())
    >>> y.shape, y.dtype, bool((y * 255 == (y * 255).round()).all())
    (torch.Size([4, 3, 32, 32]), torch.float32, True)
"""

from __future__ import annotations

import io
import itertools
import math
import numbers
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch
from PIL import Image

from robustlab.degrade.base import DEGRADATIONS, Degradation
from robustlab.errors import InvalidParameterError
from robustlab.tensors import to_uint8

# libjpeg's JPEG_MAX_DIMENSION: no side of a JPEG may exceed it.
_JPEG_MAX_SIDE = 65_500
# Fewer images than this per chunk are not worth a thread or a process.
_MIN_CHUNK = 16
_RESTART_MARKER = re.compile(rb"\xff[\xd0-\xd7]")
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def cpu_workers() -> int:
    """The number of CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check_channels(x: torch.Tensor, codec: str) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InvalidParameterError(
            f"{codec} codes grey (C=1) or RGB (C=3) batches (N, C, H, W), got shape "
            f"{tuple(x.shape)}"
        )


def _to_images(x: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` floats in ``[0, 1]`` -> contiguous ``(N, H, W, C)`` uint8 on the CPU."""
    return to_uint8(x.detach()).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _from_images(images: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_to_images`, on the device and dtype of ``like``."""
    out = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(like.device)
    return out.to(like.dtype).div_(255)


def _split(count: int, parts: int) -> list[slice]:
    bounds = np.linspace(0, count, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _run_chunks(
    work: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    chunks: list[slice],
    executor: Executor | None,
) -> np.ndarray:
    if executor is None or len(chunks) == 1:
        return np.concatenate([work(images[c]) for c in chunks])
    return np.concatenate(list(executor.map(work, [images[c] for c in chunks])))


# --------------------------------------------------------------------------------------- JPEG


def _pil(image: np.ndarray) -> Image.Image:
    """An ``(H, W, C)`` uint8 array as a Pillow image of mode L or RGB."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _jpeg_bytes(image: np.ndarray, quality: int, **options: Any) -> bytes:
    buffer = io.BytesIO()
    _pil(image).save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def _jpeg_decode(data: bytes, height: int, width: int, channels: int) -> np.ndarray:
    """Decode one JPEG with libjpeg-turbo's default settings, as ``Image.open`` does.

    Grey strips go through Pillow's decoder (one call per strip, header parsing skipped).
    Colour images are decoded one by one, where the decoder's set-up dominates: OpenCV's
    ``imdecode`` (the same libjpeg-turbo defaults: islow IDCT, fancy upsampling, so the same
    pixels, which the tests check against Pillow) sets up 2.2x faster than Pillow's
    ``Image.frombytes`` and releases the GIL, so the decoding threads run in parallel.
    """
    if channels == 1:
        decoded = Image.frombytes("L", (width, height), data, "jpeg", "L", "")
        return np.asarray(decoded).reshape(height, width, 1)
    import cv2  # imported here: only colour JPEG needs it

    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11 decodes to RGB itself
    flags = (cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.shape != (height, width, 3):
        raise RuntimeError(f"libjpeg could not decode a {width}x{height} colour JPEG")
    return image if rgb_flag is not None else image[..., ::-1]


def _jpeg_header(data: bytes, height: int) -> tuple[bytes, int]:
    """The header of a JPEG up to its scan data, for one image of ``height`` rows.

    Returns the header with the frame height set to ``height`` and any restart interval (DRI)
    dropped, and the offset in ``data`` where the entropy-coded data start.
    """
    header = bytearray(data[:2])
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError(f"malformed JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = bytearray(data[pos : pos + 2 + length])
        pos += 2 + length
        if marker in _SOF_MARKERS:
            segment[5:7] = height.to_bytes(2, "big")
        if marker != 0xDD:  # DRI: a single image needs no restart interval
            header += segment
        if marker == 0xDA:  # SOS: the entropy-coded data follow
            return bytes(header), pos


def _jpeg_chunk(images: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-code ``(k, H, W, C)`` uint8 images, identically to coding each one with Pillow."""
    k, h, w, c = images.shape
    if c == 3 and h % 2 == 0 and h % 16:
        return np.stack([_jpeg_decode(_jpeg_bytes(a, quality), h, w, c) for a in images])
    mcu = 8 if c == 1 else 16
    padded = -(-h // mcu) * mcu
    if padded != h:
        images = np.pad(images, ((0, 0), (0, padded - h), (0, 0), (0, 0)), mode="edge")
    strip = images.reshape(k * padded, w, c)
    if c == 1:
        data = _jpeg_bytes(strip, quality)
        return _jpeg_decode(data, k * padded, w, c).reshape(k, padded, w, c)[:, :h]
    data = _jpeg_bytes(strip, quality, restart_marker_rows=padded // mcu)
    header, start = _jpeg_header(data, h)
    segments = _RESTART_MARKER.split(data[start:-2])  # the stream ends with EOI (FF D9)
    if len(segments) != k:
        raise RuntimeError(f"expected {k} restart segments from libjpeg, found {len(segments)}")
    return np.stack([_jpeg_decode(header + s + b"\xff\xd9", h, w, c) for s in segments])


def jpeg_images(images: np.ndarray, quality: int, workers: int | None = None) -> np.ndarray:
    """JPEG-code ``(N, H, W, C)`` uint8 images (C = 1 or 3) on ``workers`` threads.

    The result equals ``Image.open(buf)`` after ``Image.save(buf, "JPEG", quality=quality)`` for
    each image, bit for bit.
    """
    n, h = images.shape[:2]
    workers = cpu_workers() if workers is None else workers
    per_strip = max(1, _JPEG_MAX_SIDE // (-(-h // 16) * 16))  # images per strip, at most
    parts = max(min(workers, n // _MIN_CHUNK), -(-n // per_strip), 1)
    chunks = _split(n, parts)

    def work(part: np.ndarray) -> np.ndarray:
        return _jpeg_chunk(part, quality)

    if len(chunks) == 1 or workers == 1:
        return _run_chunks(work, images, chunks, None)
    with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
        return _run_chunks(work, images, chunks, pool)


def _check_quality(quality: int) -> int:
    whole = (
        isinstance(quality, numbers.Real)
        and not isinstance(quality, bool)
        and float(quality).is_integer()
    )
    if not whole or not 1 <= quality <= 100:
        raise InvalidParameterError(f"quality must be an integer in [1, 100], got {quality!r}")
    return int(quality)


@DEGRADATIONS.register("jpeg", severity="quality", tags=("compression", "codec"))
class JPEG(Degradation):
    """JPEG compression at ``quality`` (libjpeg through Pillow, Pillow's default settings).

    Bit-identical to saving each quantised image with ``Image.save(buf, "JPEG",
    quality=quality)`` and reading it back: baseline, standard Huffman tables, 4:2:0 chroma
    subsampling for RGB. The codec work runs on all cores. Deterministic, not differentiable.

    Args:
        quality: libjpeg quality factor, an integer in ``[1, 100]`` (ImageNet-C uses 25 to 7,
            CIFAR-10-C 80 to 40, ghosh2018's Table 1 uses 10).
    """

    random = False

    def __init__(self, quality: int = 75) -> None:
        self.quality = _check_quality(quality)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Encode and decode every image of ``x``; ``generator`` is not used."""
        _check_channels(x, "jpeg")
        if max(x.shape[2:]) > _JPEG_MAX_SIDE:
            raise InvalidParameterError(
                f"JPEG images can be at most {_JPEG_MAX_SIDE} pixels a side, got "
                f"{tuple(x.shape[2:])}"
            )
        if x.shape[0] == 0:
            return x.clone()
        return _from_images(jpeg_images(_to_images(x), self.quality), x)


# ---------------------------------------------------------------------------------- JPEG 2000


def jpeg2000_options(
    channels: int, ratio: float | None, psnr: float | None, irreversible: bool
) -> dict[str, Any]:
    """The keyword arguments of ``Image.save(buf, "JPEG2000", **options)`` this module uses."""
    if ratio is not None:
        mode, layer = "rates", float(ratio)
    elif psnr is not None:
        mode, layer = "dB", float(psnr)
    else:
        raise InvalidParameterError("jpeg2000 needs one of ratio and psnr")
    return {
        "no_jp2": True,
        "quality_mode": mode,
        "quality_layers": [layer],
        "irreversible": irreversible,
        "mct": 1 if channels == 3 else 0,
    }


def _jpeg2000_chunk(images: np.ndarray, options: dict[str, Any]) -> np.ndarray:
    """JPEG 2000-code ``(k, H, W, C)`` uint8 images one by one (top level: runs in workers)."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        _pil(image).save(buffer, "JPEG2000", **options)
        buffer.seek(0)
        with Image.open(buffer, formats=["JPEG2000"]) as decoded:
            out[i] = np.asarray(decoded).reshape(image.shape)
    return out


_pool: ProcessPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _process_pool(workers: int) -> ProcessPoolExecutor | None:
    """The module's pool of forked worker processes, started on first use; None off Linux."""
    global _pool, _pool_pid
    if workers < 2 or sys.platform != "linux":
        return None
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():  # a forked child must not reuse it
            import multiprocessing

            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
            _pool_pid = os.getpid()
        return _pool


def _drop_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def jpeg2000_images(
    images: np.ndarray, options: dict[str, Any], workers: int | None = None
) -> np.ndarray:
    """JPEG 2000-code ``(N, H, W, C)`` uint8 images with ``options``, on worker processes.

    The result equals coding each image with ``Image.save(buf, "JPEG2000", **options)`` and
    decoding it with ``Image.open``.
    """
    n = images.shape[0]
    workers = cpu_workers() if workers is None else workers
    parts = min(4 * workers, n // _MIN_CHUNK)
    pool = _process_pool(workers) if parts >= 2 else None
    if pool is None:
        return _jpeg2000_chunk(images, options)
    chunks = _split(n, parts)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns that forking a threaded process may deadlock the child; the
            # workers only run Pillow and NumPy, never torch or a lock another thread may hold.
            warnings.filterwarnings(
                "ignore", message=".*multi-threaded.*fork", category=DeprecationWarning
            )
            futures = [pool.submit(_jpeg2000_chunk, images[c], options) for c in chunks]
        return np.concatenate([f.result() for f in futures])
    except (BrokenProcessPool, OSError, RuntimeError):
        _drop_pool()
        return _jpeg2000_chunk(images, options)


def _check_positive_finite(name: str, value: float, above: float, unit: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{name} must be a number > {above}{unit}, got {value!r}"
        ) from None
    if not (value > above and math.isfinite(value)):
        raise InvalidParameterError(f"{name} must be a finite number > {above}{unit}, got {value}")
    return value


@DEGRADATIONS.register("jpeg2000", severity="ratio", tags=("compression", "codec"))
class JPEG2000(Degradation):
    """JPEG 2000 compression to a compression ``ratio`` or a target ``psnr`` (OpenJPEG via Pillow).

    Give exactly one of ``ratio`` and ``psnr``. Each image is coded on its own as a J2K
    codestream with one quality layer, the irreversible 9/7 wavelet (unless ``irreversible`` is
    false) and, for RGB, the irreversible colour transform; the result equals coding each image
    with ``Image.save(buf, "JPEG2000", no_jp2=True, quality_mode=..., quality_layers=[...],
    irreversible=..., mct=...)`` and ``Image.open``. Images are spread over worker processes.
    Deterministic, not differentiable.

    The ratio counts the codestream headers (about 120 bytes), so small images cannot reach high
    ratios: a 32 x 32 RGB image is 3,072 bytes, 20:1 leaves about 30 bytes for the image data.
    For MNIST- and CIFAR-size images a PSNR target is the more meaningful severity.

    Args:
        ratio: compression ratio ``> 1`` (20 means 20:1: raw ``H * W * C`` bytes over codestream
            bytes), OpenJPEG's ``quality_mode="rates"``.
        psnr: target peak signal-to-noise ratio in dB, ``> 0``, OpenJPEG's ``quality_mode="dB"``.
        irreversible: use the irreversible 9/7 wavelet (lossy JPEG 2000's usual choice) instead
            of the reversible 5/3 one.
    """

    random = False

    def __init__(
        self, ratio: float | None = None, psnr: float | None = None, irreversible: bool = True
    ) -> None:
        if (ratio is None) == (psnr is None):
            raise InvalidParameterError(
                "jpeg2000 needs exactly one of ratio (compression ratio > 1, e.g. 20 for 20:1) "
                f"and psnr (target PSNR in dB > 0), got ratio={ratio!r}, psnr={psnr!r}"
            )
        self.ratio = None if ratio is None else _check_positive_finite("ratio", ratio, 1, "")
        self.psnr = None if psnr is None else _check_positive_finite("psnr", psnr, 0, " dB")
        if not isinstance(irreversible, bool):
            raise InvalidParameterError(f"irreversible must be true or false, got {irreversible!r}")
        self.irreversible = irreversible

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Encode and decode every image of ``x``; ``generator`` is not used."""
        _check_channels(x, "jpeg2000")
        if x.shape[0] == 0:
            return x.clone()
        options = jpeg2000_options(x.shape[1], self.ratio, self.psnr, self.irreversible)
        return _from_images(jpeg2000_images(_to_images(x), options), x)
