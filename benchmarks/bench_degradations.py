"""Side-by-side speed of robustlab's degradations and filters against peer libraries.

For 1,024 images at MNIST size (1x28x28, real digits from ``robustlab.load_dataset
("mnist-sample")``) and at CIFAR size (3x32x32: there is no CIFAR offline, so 32x32 RGB crops of
scikit-image's sample photos, halved first so that a crop shows object-sized content), this
script measures in one run the images/s of each operation for robustlab and for every peer that
implements it:

==================  =========================================================================
operation           implementations
==================  =========================================================================
Gaussian noise      robustlab ``gaussian_noise``, plain torch, NumPy, imagecorruptions
salt-and-pepper     robustlab ``salt_pepper``, plain torch, scikit-image ``random_noise``,
                    imagecorruptions ``impulse_noise``
Gaussian blur       robustlab ``gaussian_blur``, OpenCV, SciPy, kornia, imagecorruptions
JPEG quality 10     robustlab ``jpeg``, OpenCV, Pillow, imagecorruptions ``jpeg_compression``
JPEG 2000 20:1      robustlab ``jpeg2000:ratio=20``, Pillow/OpenJPEG (twice), OpenCV ``.jp2``
median 3x3          robustlab ``median`` defence, kornia, OpenCV, SciPy
box 5x5             robustlab ``box`` defence, SciPy, OpenCV, kornia
==================  =========================================================================

Every implementation is called the way a user holding the project's currency (a float32
``(N, C, H, W)`` batch in ``[0, 1]``) would call it, and its timing includes the conversions
that library needs there and back (the ``takes`` column): none for torch and kornia, a
zero-copy ``.numpy()`` for SciPy / NumPy / scikit-image, a channels-last copy for OpenCV's float
filters, quantisation to uint8 channels-last for the codecs and imagecorruptions. Per-image
libraries (OpenCV, Pillow, imagecorruptions) run in a Python loop over the batch, as they must.

Timing: ``time.perf_counter`` around one call on the whole batch, under
``torch.inference_mode()``; one warm-up call per implementation, then ``--repeats`` rounds in
which every implementation of the operation runs once (the order rotating from round to round,
so background load hits them alike); images/s is the batch size over the median time, best/s
over the fastest repeat. ``spread`` is the slowest over the fastest repeat: well above 1.2 means
the machine was busy, rerun.
The ``rl / this`` column is robustlab's images/s over that row's; on robustlab's own row it is
the ratio to the FASTEST peer (>= 1.0: robustlab is at least as fast), and rows below 1.0 are
marked ``<< SLOWER``. The ``check`` column shows, for deterministic operations, the largest
absolute difference from robustlab's output (on the [0, 1] scale), over the whole image and
over its interior (4 pixels from every side, where border modes no longer matter), and for
random ones the mean absolute change ``mean|y-x|``: the implementations do comparable work at
matching severities.

Run (after ``bash benchmarks/setup_peers.sh``)::

    .bench-venv/bin/python benchmarks/bench_degradations.py [--n 1024] [--repeats 5]
        [--threads N] [--json PATH]

``--threads N`` sets torch's intra-op threads and OpenCV's threads; by default both keep their
own defaults (one thread per core). SciPy, NumPy, scikit-image and Pillow run on one thread;
robustlab's JPEG uses one thread per usable core and its JPEG 2000 a pool of forked processes,
whatever ``--threads`` says. On a machine shared with other work, torch's default threads wait
for each other on every operation: ``--threads 1`` then compares the libraries themselves.

``--reuse-memory`` raises glibc's mmap and trim thresholds (``mallopt``) so that large
temporaries are reused instead of being mapped and page-faulted on every call (see
:func:`reuse_memory`); without it the timings are what a default process gets, and those of
torch / kornia convolutions depend on the allocator's state (see ``benchmarks/PEERS.md``).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import kornia
import kornia.filters
import numpy as np
import PIL
import PIL.features
import scipy
import scipy.ndimage as ndi
import skimage
import skimage.data
import skimage.util
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer_shims
import robustlab
from robustlab.degrade.codecs import cpu_workers

# The shims go in before imagecorruptions is first imported (see _peer_shims).
imagecorruptions = _peer_shims.import_imagecorruptions()
ic = imagecorruptions.corruptions

# Severities: robustlab's parameter and the imagecorruptions severity (1-5) that gives it.
NOISE_SIGMA, NOISE_SEVERITY = 0.18, 3  # imagecorruptions gaussian_noise: .08 .12 .18 .26 .38
SP_AMOUNT, SP_SEVERITY = 0.09, 3  # imagecorruptions impulse_noise: .03 .06 .09 .17 .27
BLUR_SIGMA, BLUR_SEVERITY = 1.0, 1  # imagecorruptions gaussian_blur: 1 2 3 4 6
BLUR_KSIZE = 2 * int(4 * BLUR_SIGMA + 0.5) + 1  # SciPy's truncate=4: 9 taps
JPEG_QUALITY, JPEG_SEVERITY = 10, 4  # imagecorruptions jpeg_compression: 25 18 15 10 7
J2K_RATIO = 20
MEDIAN_SIZE = 3
BOX_SIZE = 5
# The check column also compares outputs away from the borders, where border modes differ.
MARGIN = 4

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


# ------------------------------------------------------------------------------------ data


def mnist_images(n: int) -> torch.Tensor:
    """``n`` real MNIST digits ``(n, 1, 28, 28)`` float32 in [0, 1] (repeated if n > 4,000)."""
    images = robustlab.load_dataset("mnist-sample").train.images
    reps = -(-n // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:n].float().div_(255)


def cifar_like_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` 32x32 RGB crops of scikit-image's sample photos, halved first, as float32 NCHW."""
    rng = np.random.default_rng(seed)
    halves = []
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        h, w = (photo.shape[0] // 2) * 2, (photo.shape[1] // 2) * 2
        half = photo[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        halves.append(half.round().astype(np.uint8))
    crops = []
    for i in range(n):
        half = halves[i % len(halves)]
        top = rng.integers(0, half.shape[0] - 32 + 1)
        left = rng.integers(0, half.shape[1] - 32 + 1)
        crops.append(half[top : top + 32, left : left + 32])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().float().div_(255)


# ---------------------------------------------------------------------- conversions (timed)


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """float32 NCHW -> ``(N, H, W)`` for grey (a zero-copy view) or ``(N, H, W, C)`` float32."""
    if x.shape[1] == 1:
        return x[:, 0].numpy()
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """float32 NCHW in [0, 1] -> uint8 ``(N, H, W)`` (grey) or ``(N, H, W, C)``, rounded."""
    q = x.mul(255).round_().to(torch.uint8)
    return q[:, 0].numpy() if x.shape[1] == 1 else q.permute(0, 2, 3, 1).contiguous().numpy()


def from_hwc(a: np.ndarray) -> torch.Tensor:
    """The inverse of :func:`to_hwc` / :func:`to_uint8_hwc`: float32 NCHW in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()
    return t.float().div_(255) if t.dtype == torch.uint8 else t


def per_image(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to each image of ``images``, writing into one preallocated output array."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = fn(image)
    return out


# ------------------------------------------------------------------- implementations


class Unsupported(Exception):
    """A peer cannot do the operation on these images: its row is skipped with this note."""


@dataclass
class Impl:
    """One implementation of an operation: a callable from the float32 NCHW batch to the same."""

    name: str
    library: str
    takes: str
    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Operation:
    """An operation, its implementations (robustlab's first) and whether its output is random."""

    name: str
    impls: list[Impl]
    random: bool
    skipped: list[str] = field(default_factory=list)


def imagecorruptions_impl(corruption: str, severity: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per image, as ``imagecorruptions.corrupt`` does: PIL image in, ``np.uint8(result)`` out.

    ``corrupt`` itself refuses images under 32 pixels a side and turns grey into RGB; the
    corruption function is called directly instead, on grey (L) or RGB images of any size.
    """
    function = getattr(ic, corruption)

    def one(image: np.ndarray) -> np.ndarray:
        return np.uint8(function(Image.fromarray(image), severity))

    return lambda x: from_hwc(per_image(one, to_uint8_hwc(x)))


def noise_ops() -> list[Operation]:
    g = torch.Generator().manual_seed(0)
    rl_noise = robustlab.create_degradation("gaussian_noise", sigma=NOISE_SIGMA)
    rl_sp = robustlab.create_degradation("salt_pepper", amount=SP_AMOUNT)
    rng = np.random.default_rng(0)

    def numpy_noise(x: torch.Tensor) -> torch.Tensor:
        a = x.numpy()
        y = rng.standard_normal(a.shape, dtype=np.float32)
        y *= NOISE_SIGMA
        y += a
        return torch.from_numpy(np.clip(y, 0.0, 1.0, out=y))

    def torch_sp(x: torch.Tensor) -> torch.Tensor:
        u = torch.rand_like(x[:, :1])
        return torch.where(u < SP_AMOUNT / 2, 0.0, torch.where(u < SP_AMOUNT, 1.0, x))

    def skimage_sp(x: torch.Tensor) -> torch.Tensor:
        y = skimage.util.random_noise(x.numpy(), mode="s&p", amount=SP_AMOUNT, rng=rng)
        return torch.from_numpy(y.astype(np.float32, copy=False))

    return [
        Operation(
            f"Gaussian noise sigma {NOISE_SIGMA}",
            [
                Impl(
                    "robustlab gaussian_noise", "robustlab", "float NCHW", lambda x: rl_noise(x, g)
                ),
                Impl(
                    "torch (x + s*randn_like(x)).clamp",
                    "torch",
                    "float NCHW",
                    lambda x: (x + NOISE_SIGMA * torch.randn_like(x)).clamp(0, 1),
                ),
                Impl("numpy standard_normal + clip", "numpy", "float NCHW (.numpy())", numpy_noise),
                Impl(
                    f"imagecorruptions gaussian_noise sev {NOISE_SEVERITY}",
                    "imagecorruptions",
                    "uint8 HWC per image",
                    imagecorruptions_impl("gaussian_noise", NOISE_SEVERITY),
                ),
            ],
            random=True,
        ),
        Operation(
            f"salt & pepper amount {SP_AMOUNT}",
            [
                Impl("robustlab salt_pepper", "robustlab", "float NCHW", lambda x: rl_sp(x, g)),
                Impl("torch rand_like + where", "torch", "float NCHW", torch_sp),
                Impl(
                    "skimage random_noise s&p (batch)",
                    "scikit-image",
                    "float NCHW (.numpy())",
                    skimage_sp,
                ),
                Impl(
                    f"imagecorruptions impulse_noise sev {SP_SEVERITY}",
                    "imagecorruptions",
                    "uint8 HWC per image",
                    imagecorruptions_impl("impulse_noise", SP_SEVERITY),
                ),
            ],
            random=True,
        ),
    ]


def blur_op() -> Operation:
    g = torch.Generator()
    rl = robustlab.create_degradation("gaussian_blur", sigma=BLUR_SIGMA)
    k = (BLUR_KSIZE, BLUR_KSIZE)

    def opencv(x: torch.Tensor) -> torch.Tensor:
        def one(image: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(image, k, BLUR_SIGMA, borderType=cv2.BORDER_REFLECT_101)

        return from_hwc(per_image(one, to_hwc(x)))

    def scipy_blur(x: torch.Tensor) -> torch.Tensor:
        y = ndi.gaussian_filter(x.numpy(), sigma=(0, 0, BLUR_SIGMA, BLUR_SIGMA), mode="mirror")
        return torch.from_numpy(y)

    return Operation(
        f"Gaussian blur sigma {BLUR_SIGMA:g} ({BLUR_KSIZE}x{BLUR_KSIZE})",
        [
            Impl("robustlab gaussian_blur", "robustlab", "float NCHW", lambda x: rl(x, g)),
            Impl("OpenCV GaussianBlur", "opencv", "float HWC per image", opencv),
            Impl("SciPy gaussian_filter (batch)", "scipy", "float NCHW (.numpy())", scipy_blur),
            Impl(
                "kornia gaussian_blur2d",
                "kornia",
                "float NCHW",
                lambda x: kornia.filters.gaussian_blur2d(x, k, (BLUR_SIGMA, BLUR_SIGMA)),
            ),
            Impl(
                f"imagecorruptions gaussian_blur sev {BLUR_SEVERITY}",
                "imagecorruptions",
                "uint8 HWC per image",
                imagecorruptions_impl("gaussian_blur", BLUR_SEVERITY),
            ),
        ],
        random=False,
    )


def jpeg_op() -> Operation:
    g = torch.Generator()
    rl = robustlab.create_degradation("jpeg", quality=JPEG_QUALITY)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]

    def opencv(x: torch.Tensor) -> torch.Tensor:
        images = to_uint8_hwc(x)
        rgb = images.ndim == 4
        if rgb:  # OpenCV codes BGR
            images = np.ascontiguousarray(images[..., ::-1])

        def one(image: np.ndarray) -> np.ndarray:
            _, data = cv2.imencode(".jpg", image, params)
            return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)

        out = per_image(one, images)
        return from_hwc(out[..., ::-1] if rgb else out)

    def pillow(x: torch.Tensor) -> torch.Tensor:
        def one(image: np.ndarray) -> np.ndarray:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
            return np.asarray(Image.open(buffer))

        return from_hwc(per_image(one, to_uint8_hwc(x)))

    return Operation(
        f"JPEG quality {JPEG_QUALITY}",
        [
            Impl("robustlab jpeg", "robustlab", "float NCHW", lambda x: rl(x, g)),
            Impl("OpenCV imencode/imdecode", "opencv", "uint8 HWC (BGR) per image", opencv),
            Impl("Pillow save/open", "pillow", "uint8 HWC per image", pillow),
            Impl(
                f"imagecorruptions jpeg_compression sev {JPEG_SEVERITY}",
                "imagecorruptions",
                "uint8 HWC per image",
                imagecorruptions_impl("jpeg_compression", JPEG_SEVERITY),
            ),
        ],
        random=False,
    )


def jpeg2000_op() -> Operation:
    g = torch.Generator()
    rl = robustlab.create_degradation("jpeg2000", ratio=J2K_RATIO)

    def pillow(**options: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def one(image: np.ndarray) -> np.ndarray:
            buffer = io.BytesIO()
            opts = dict(options)
            if "mct" in opts:
                opts["mct"] = 1 if image.ndim == 3 else 0
            Image.fromarray(image).save(
                buffer, "JPEG2000", quality_mode="rates", quality_layers=[J2K_RATIO], **opts
            )
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                return np.asarray(decoded)

        return lambda x: from_hwc(per_image(one, to_uint8_hwc(x)))

    impls = [
        Impl("robustlab jpeg2000:ratio=20", "robustlab", "float NCHW", lambda x: rl(x, g)),
        Impl(
            "Pillow/OpenJPEG, robustlab's settings",
            "pillow",
            "uint8 HWC per image",
            pillow(irreversible=True, mct=1, no_jp2=True),
        ),
        Impl(
            "Pillow/OpenJPEG, Pillow defaults",
            "pillow",
            "uint8 HWC per image",
            pillow(),
        ),
    ]
    skipped = []
    if cv2.haveImageWriter(".jp2") and hasattr(cv2, "IMWRITE_JPEG2000_COMPRESSION_X1000"):
        # OpenCV's OpenJPEG encoder takes the rate x 1000: 1000 / 20 = 50 for 20:1.
        params = [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, round(1000 / J2K_RATIO)]

        def opencv(x: torch.Tensor) -> torch.Tensor:
            images = to_uint8_hwc(x)
            rgb = images.ndim == 4
            if rgb:
                images = np.ascontiguousarray(images[..., ::-1])

            def one(image: np.ndarray) -> np.ndarray:
                ok, data = cv2.imencode(".jp2", image, params)
                if not ok:
                    raise Unsupported(
                        f"OpenCV: imencode('.jp2') fails on {image.shape[0]}x{image.shape[1]} "
                        "images (OpenJPEG: 'number of resolutions is too high' - OpenCV asks "
                        "for 6 levels, i.e. sides >= 32 px, and has no parameter to lower it)"
                    )
                return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)

            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            try:
                out = per_image(one, images)
            finally:
                cv2.utils.logging.setLogLevel(level)
            return from_hwc(out[..., ::-1] if rgb else out)

        impls.append(Impl("OpenCV .jp2 (OpenJPEG)", "opencv", "uint8 HWC (BGR) per image", opencv))
    else:
        skipped.append("OpenCV: this build cannot write JPEG 2000 (.jp2)")
    return Operation(f"JPEG 2000 ratio {J2K_RATIO}:1", impls, random=False, skipped=skipped)


def median_op() -> Operation:
    rl = robustlab.create_defense("median", size=MEDIAN_SIZE)
    s = MEDIAN_SIZE

    def opencv(x: torch.Tensor) -> torch.Tensor:
        return from_hwc(per_image(lambda image: cv2.medianBlur(image, s), to_hwc(x)))

    def scipy_median(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(ndi.median_filter(x.numpy(), size=(1, 1, s, s), mode="mirror"))

    return Operation(
        f"median {s}x{s}",
        [
            Impl("robustlab median defence", "robustlab", "float NCHW", rl),
            Impl(
                "kornia median_blur",
                "kornia",
                "float NCHW",
                lambda x: kornia.filters.median_blur(x, (s, s)),
            ),
            Impl("OpenCV medianBlur (float32)", "opencv", "float HWC per image", opencv),
            Impl("SciPy median_filter (batch)", "scipy", "float NCHW (.numpy())", scipy_median),
        ],
        random=False,
    )


def box_op() -> Operation:
    rl = robustlab.create_defense("box", size=BOX_SIZE)
    s = BOX_SIZE

    def opencv(x: torch.Tensor) -> torch.Tensor:
        return from_hwc(per_image(lambda image: cv2.blur(image, (s, s)), to_hwc(x)))

    def scipy_box(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(ndi.uniform_filter(x.numpy(), size=(1, 1, s, s), mode="mirror"))

    return Operation(
        f"box {s}x{s}",
        [
            Impl("robustlab box defence", "robustlab", "float NCHW", rl),
            Impl("SciPy uniform_filter (batch)", "scipy", "float NCHW (.numpy())", scipy_box),
            Impl("OpenCV blur (float32)", "opencv", "float HWC per image", opencv),
            Impl(
                "kornia box_blur",
                "kornia",
                "float NCHW",
                lambda x: kornia.filters.box_blur(x, (s, s)),
            ),
        ],
        random=False,
    )


def operations() -> list[Operation]:
    return [*noise_ops(), blur_op(), jpeg_op(), jpeg2000_op(), median_op(), box_op()]


# ------------------------------------------------------------------------------ measuring


@dataclass
class Row:
    """The measurement of one implementation on one image size."""

    size: str
    operation: str
    implementation: str
    library: str
    takes: str
    times_s: list[float]
    n: int
    check: str
    ratio: float | None = None  # robustlab / this (robustlab row: / fastest peer)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def images_per_s(self) -> float:
        return self.n / self.median_s

    @property
    def best_images_per_s(self) -> float:
        return self.n / min(self.times_s)

    @property
    def spread(self) -> float:
        return max(self.times_s) / min(self.times_s)


def timed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def measure(op: Operation, x: torch.Tensor, size: str, repeats: int) -> tuple[list[Row], list[str]]:
    """Warm up every implementation of ``op``, then time them in rotating order.

    Returns the rows (robustlab's first) and notes on peers skipped for these images.
    """
    outputs = {}
    impls = []
    skipped = list(op.skipped)
    for impl in op.impls:  # warm-up, output kept for the check column
        try:
            y = impl.fn(x)
        except Unsupported as error:
            skipped.append(f"{op.name}: {error}")
            continue
        impls.append(impl)
        if y.shape != x.shape or y.dtype != x.dtype:
            raise RuntimeError(f"{impl.name}: got {tuple(y.shape)} {y.dtype} for {tuple(x.shape)}")
        outputs[impl.name] = y
    times: dict[str, list[float]] = {impl.name: [] for impl in impls}
    for r in range(repeats):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            times[impl.name].append(timed(impl.fn, x))
    reference = outputs[impls[0].name]
    rows = []
    for impl in impls:
        y = outputs[impl.name]
        if op.random:
            check = f"mean|y-x| {float((y - x).abs().mean()):.4f}"
        elif impl is impls[0]:
            check = "(reference)"
        else:
            diff = (y - reference).abs()
            inner = diff[..., MARGIN:-MARGIN, MARGIN:-MARGIN]
            check = f"max|diff| {float(diff.max()):.4f} (interior {float(inner.max()):.4f})"
        rows.append(
            Row(size, op.name, impl.name, impl.library, impl.takes, times[impl.name], len(x), check)
        )
    robustlab_row, peers = rows[0], rows[1:]
    fastest = max(peers, key=lambda row: row.images_per_s)
    robustlab_row.ratio = robustlab_row.images_per_s / fastest.images_per_s
    for row in peers:
        row.ratio = robustlab_row.images_per_s / row.images_per_s
    return rows, skipped


# ------------------------------------------------------------------------------ reporting


def reuse_memory() -> str:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    By default glibc serves every allocation of 32 MB or more (and smaller ones, depending on
    what the process did before) with a fresh ``mmap`` and unmaps it on free, so a call that
    allocates a large temporary pays page faults for it every time. torch's CPU convolution
    (oneDNN, which kornia's filters use) allocates such scratch memory on every call: on this
    machine a mmap threshold of 32 MB leaves ``kornia.filters.gaussian_blur2d`` on 1,024 MNIST
    images at about 21,000 images/s, 1 GiB takes it to about 100,000. Raising the mmap and trim
    thresholds keeps those buffers in the heap, so the timings show the libraries' compute
    rather than the allocator's state. Returns a description of what was done.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "system allocator (--reuse-memory needs glibc; not applied)"
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = (
        mallopt(m_mmap_threshold, 1 << 30)
        and mallopt(m_trim_threshold, (1 << 31) - 1)
        and mallopt(m_top_pad, 64 << 20)
    )
    if not ok:
        return "system allocator (mallopt refused the thresholds; not applied)"
    return "glibc mallopt: mmap threshold 1 GiB, trim threshold 2 GiB (freed memory reused)"


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "robustlab": robustlab.__version__,
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "kornia": kornia.__version__,
        "imagecorruptions": importlib.metadata.version("imagecorruptions"),
        "openjpeg (Pillow)": PIL.features.version_codec("jpg_2000") or "?",
        "libjpeg-turbo (Pillow)": PIL.features.version("libjpeg_turbo") or "?",
    }


def thread_settings() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": cpu_workers(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "robustlab_jpeg_threads": cpu_workers(),
        "robustlab_jpeg2000_processes": cpu_workers() if cpu_workers() > 1 else 0,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }


def format_ratio(ratio: float) -> str:
    """Two decimals, three below 0.1 (so that 0.004 does not print as 0.00)."""
    return f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}"


def print_table(title: str, rows: list[Row], skipped: list[str]) -> None:
    print(f"\n== {title} ==")
    header = (
        f"{'operation':<28} {'implementation':<39} {'takes':<26} {'images/s':>9} "
        f"{'best/s':>9} {'rl / this':>9} {'':<9} {'spread':>6}  check"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        if row.operation != previous and previous is not None:
            print()
        op = row.operation if row.operation != previous else ""
        previous = row.operation
        ratio = float("nan") if row.ratio is None else row.ratio
        flag = "<< SLOWER" if row.library == "robustlab" and ratio < 1 else ""
        print(
            f"{op:<28} {row.implementation:<39} {row.takes:<26} {row.images_per_s:>9,.0f} "
            f"{row.best_images_per_s:>9,.0f} {format_ratio(ratio):>9} {flag:<9} "
            f"{row.spread:>6.2f}  {row.check}"
        )
    for note in skipped:
        print(f"  skipped: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="images per batch (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)"
    )
    parser.add_argument(
        "--reuse-memory",
        action="store_true",
        help="make glibc keep freed memory (no per-call page faults on large temporaries)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    allocator = reuse_memory() if args.reuse_memory else "system allocator (glibc defaults)"

    info = {"versions": versions(), "threads": thread_settings(), "allocator": allocator}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print("threads:  " + ", ".join(f"{k}={v}" for k, v in info["threads"].items()))
    print(f"memory:   {allocator}")
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    if torch.get_num_threads() > 1 and load_before[0] > cpu_workers() - 1:
        print(
            "note: other work keeps the cores busy and torch runs on "
            f"{torch.get_num_threads()} threads: each parallel torch operation then waits for "
            "a descheduled thread (about 8 ms an operation on this machine, against 0.1 ms on "
            "one thread), which slows robustlab, torch and kornia rows alike; rerun with "
            "--threads 1 to compare the libraries themselves"
        )

    sizes = {
        "1x28x28 (MNIST digits)": mnist_images(args.n),
        "3x32x32 (CIFAR-size RGB photo crops)": cifar_like_images(args.n),
    }
    ops = operations()
    all_rows: list[Row] = []
    started = time.perf_counter()
    with torch.inference_mode():
        for label, x in sizes.items():
            rows: list[Row] = []
            skipped: list[str] = []
            for op in ops:
                op_rows, op_skipped = measure(op, x, label, args.repeats)
                rows += op_rows
                skipped += op_skipped
            print_table(f"{label}: {args.n:,} images, median of {args.repeats}", rows, skipped)
            all_rows += rows
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    slower = [
        r for r in all_rows if r.library == "robustlab" and r.ratio is not None and r.ratio < 1
    ]
    print(
        "\nrl / this: robustlab's images/s over the row's; on robustlab's row, over the fastest "
        "peer's (>= 1.0: robustlab at least as fast). Timings include the conversions from "
        "float32 NCHW in [0, 1] that the 'takes' column names, and back."
    )
    if slower:
        print("robustlab below the fastest peer:")
        for r in slower:
            noise = "  (within 5%: run-to-run noise on a shared machine)" if r.ratio >= 0.95 else ""
            print(f"  {r.size:<38} {r.operation:<28} {format_ratio(r.ratio)}x{noise}")
    else:
        print("robustlab is at least as fast as every peer on every operation.")
    print(
        f"measured in {elapsed:.0f} s; load average after: "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )

    if args.json is not None:
        payload = {
            **info,
            "n": args.n,
            "repeats": args.repeats,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "seconds": elapsed,
            "rows": [
                {
                    "size": r.size,
                    "operation": r.operation,
                    "implementation": r.implementation,
                    "library": r.library,
                    "takes": r.takes,
                    "images_per_s": r.images_per_s,
                    "best_images_per_s": r.best_images_per_s,
                    "median_s": r.median_s,
                    "times_s": r.times_s,
                    "spread": r.spread,
                    "ratio_robustlab_over_this": r.ratio,
                    "check": r.check,
                }
                for r in all_rows
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
