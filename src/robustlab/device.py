"""Device selection: ``auto`` picks CUDA when it is available, else the CPU.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from robustlab.errors import InvalidParameterError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a ``torch.device``.

    Raises:
        InvalidParameterError: for an unknown device name, or a CUDA device this machine does
            not have; the message names the device asked for and the devices there are.
    """
    if not isinstance(name, str):
        raise InvalidParameterError(
            f"device must be a string (auto, cpu or cuda[:N]), got {name!r}; "
            f"available here: {', '.join(available_devices())}"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InvalidParameterError(
            f"unknown device '{name}'; use auto, cpu or cuda[:N] (available here: "
            f"{', '.join(available_devices())})"
        ) from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidParameterError(
                f"device '{name}' was asked for but CUDA is not available on this machine "
                f"(available here: {', '.join(available_devices())}); use cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise InvalidParameterError(
                f"device '{name}' does not exist: this machine has {count} CUDA device"
                f"{'s' if count > 1 else ''} (available here: "
                f"{', '.join(available_devices())}); use one of them or auto"
            )
    return device


def available_devices() -> list[str]:
    """The devices robustlab can use here: ``cpu`` and ``cuda:0`` ... ``cuda:N-1``.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(count))]


def tune_cpu_allocator() -> bool:
    """Keep large freed buffers in glibc's heap instead of returning them to the OS.

    A CPU forward pass allocates activation buffers of tens of MB and frees them again. With
    glibc's default thresholds every such buffer is a fresh ``mmap``, page-faulted in and
    ``munmap``-ed per batch: on 2 cores that kernel work took about 40% of inference time
    (2.0 s of system time for 20,000 MNIST images through the lin2022 CNN; none after this
    call). It changes process-wide allocator settings, so the command line calls it and library
    code does not; call it yourself in a long-running evaluation script. Returns whether it
    applied (glibc on Linux only; elsewhere it does nothing).

    Example:
        >>> tune_cpu_allocator() in (True, False)
        True
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    limit = 1 << 30
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))


def limit_threads(cpus: int) -> None:
    """Run PyTorch's and OpenCV's kernels on at most ``cpus`` threads.

    A process that uses more threads than the cores it was given competes with its neighbours
    (other Ray workers, another study): measured here, small multi-threaded tensor ops slowed
    down up to 100x on a machine where another process held a core. Ray workers call this with
    the CPUs of their task; the local executor with ``--cpus``.

    Example:
        >>> limit_threads(torch.get_num_threads())
        >>> torch.get_num_threads() >= 1
        True
    """
    if cpus < 1:
        raise InvalidParameterError(f"cpus must be at least 1, got {cpus}")
    torch.set_num_threads(cpus)
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        return
    cv2.setNumThreads(cpus)


@contextmanager
def threads_limited(cpus: int | None) -> Iterator[None]:
    """Limit PyTorch's and OpenCV's threads to ``cpus`` for the block, then restore both.

    Example:
        >>> before = torch.get_num_threads()
        >>> with threads_limited(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if cpus is None:
        yield
        return
    import cv2

    saved = torch.get_num_threads(), cv2.getNumThreads()
    limit_threads(cpus)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
