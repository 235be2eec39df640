"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian ``uint32`` per dimension, then the data in C order, big-endian. Files may be
gzip-compressed; compression is recognised from the content, not the name, so a ``.gz`` file
that a browser already decompressed still loads.

:func:`read_idx` checks the structure strictly and raises :class:`~robustlab.errors.DataError`
with the file's path, what is wrong and how to fix it.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
    >>> _ = write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    >>> read_idx(path).tolist()
    [3, 1, 4]
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from robustlab.errors import DataError, InvalidParameterError

__all__ = ["IDX_TYPES", "read_idx", "write_idx"]

#: IDX type code -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 4
_FIX = "re-download it, or delete it so robustlab downloads a fresh copy"


def read_idx(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Read an IDX file, gzip-compressed or raw, into a native-endian numpy array.

    Args:
        path: the file. Gzip compression is detected from the first bytes.

    Returns:
        A writable array with the file's shape and dtype (``uint8`` for MNIST files).

    Raises:
        DataError: if the file is missing or unreadable, is a corrupt gzip stream, does not
            start with an IDX magic number, or holds fewer or more data bytes than its header
            announces. The message names the file and says how to fix it.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> path = Path(tempfile.mkdtemp()) / "images-idx3-ubyte"
        >>> _ = write_idx(path, np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
        >>> array = read_idx(path)
        >>> array.shape, array.dtype.name
        ((2, 2, 2), 'uint8')
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except OSError as err:
        raise DataError(
            f"cannot read IDX file {path}: {err.strerror or err}; check that it is a readable "
            "file (permissions, not a folder)"
        ) from err

    compressed = raw[:2] == _GZIP_MAGIC
    if compressed:
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path} is a corrupt or incomplete gzip file ({err}); {_FIX}") from err
    else:
        data = raw
    return _parse(data, path, compressed)


def _parse(data: bytes, path: Path, compressed: bool) -> npt.NDArray[Any]:
    where = f"{path}{' (after gzip decompression)' if compressed else ''}"
    if len(data) < 4:
        raise DataError(
            f"{where} is truncated: {len(data)} bytes, too short for an IDX header; {_FIX}"
        )
    if data[0] != 0 or data[1] != 0:
        hint = "" if compressed else " and it is not gzip-compressed either"
        raise DataError(
            f"{where} is not an IDX file: it starts with bytes {data[:4].hex()} instead of "
            f"the IDX magic number 0000<type><ndim>{hint} (a saved error page, or the wrong "
            f"file?); {_FIX}"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DataError(
            f"{where} has unknown IDX type code 0x{code:02X} (valid: {valid}); the file is "
            f"damaged or not an IDX file; {_FIX}"
        )
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(
            f"{where} declares {ndim} dimensions; robustlab reads IDX files with 1 to "
            f"{_MAX_NDIM} dimensions; the file is damaged or not a dataset file; {_FIX}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{where} is truncated inside its header ({len(data)} of {header_len} bytes); {_FIX}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    payload = len(data) - header_len
    if payload < expected:
        raise DataError(
            f"{where} is truncated: its header announces shape {dims} ({expected:,} data "
            f"bytes) but only {payload:,} bytes follow; the file is incomplete; {_FIX}"
        )
    if payload > expected:
        raise DataError(
            f"{where} has {payload - expected:,} unexpected trailing bytes after the "
            f"{expected:,} data bytes its header announces for shape {dims}; the file is "
            f"damaged or was concatenated with something else; {_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(dims)
    # astype copies: the result is writable, native-endian and independent of ``data``.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: npt.ArrayLike) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends in ``.gz``.

    Args:
        path: the destination; missing parent folders are created.
        array: 1 to 4 dimensions, of dtype ``uint8``, ``int8``, ``int16``, ``int32``,
            ``float32`` or ``float64``.

    Returns:
        The path written.

    Raises:
        InvalidParameterError: for an unsupported dtype or number of dimensions.
        DataError: if the file cannot be written.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> path = Path(tempfile.mkdtemp()) / "x-idx2-float.gz"
        >>> _ = write_idx(path, np.eye(2, dtype=np.float32))
        >>> read_idx(path).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    path = Path(path)
    values = np.asarray(array)
    big_endian = values.dtype.newbyteorder(">")
    codes = [c for c, dt in IDX_TYPES.items() if dt == big_endian]
    if not codes:
        valid = ", ".join(dt.newbyteorder("=").name for dt in IDX_TYPES.values())
        raise InvalidParameterError(
            f"cannot write dtype {values.dtype} as IDX; use one of: {valid}"
        )
    if not 1 <= values.ndim <= _MAX_NDIM:
        raise InvalidParameterError(
            f"cannot write a {values.ndim}-dimensional array as IDX; use 1 to {_MAX_NDIM}"
        )
    if any(d >= 2**32 for d in values.shape):
        raise InvalidParameterError(f"IDX dimensions must be below 2**32, got {values.shape}")
    header = bytes([0, 0, codes[0], values.ndim]) + np.asarray(values.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(values, dtype=big_endian).tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise DataError(f"cannot write IDX file {path}: {err.strerror or err}") from err
    return path
