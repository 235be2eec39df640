"""Download a file with checksum verification, using only the standard library.

The file is streamed to ``<dest>.part`` while its MD5 is computed, then renamed onto ``dest``
only if the checksum matches, so ``dest`` either does not exist or is complete and verified.
A ``.part`` file left by an interrupted download is resumed with an HTTP ``Range`` request;
a server that ignores the range sends the whole file, which then replaces the part. If a
resumed file fails the checksum (the part was stale, or the file changed on the server), it is
downloaded once more from scratch. A partial file is never used as data.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "hello.txt"
    >>> _ = path.write_bytes(b"hello")
    >>> md5_of(path)
    '5d41402abc4b2a76b9719d911017c592'
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from robustlab.errors import DataError

__all__ = ["download_file", "md5_of"]

_CHUNK = 1 << 16
_PARTIAL_CONTENT = 206
_RANGE_NOT_SATISFIABLE = 416
_USER_AGENT = "robustlab (https://pypi.org/project/robustlab/)"


def md5_of(path: str | os.PathLike[str]) -> str:
    """Hex MD5 digest of a file's contents, read in chunks.

    Args:
        path: the file.

    Raises:
        DataError: if the file cannot be read.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "empty"
        >>> path.touch()
        >>> md5_of(path)
        'd41d8cd98f00b204e9800998ecf8427e'
    """
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"cannot read {path} to check its checksum: {err}") from err
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, *, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest``, verifying its MD5, and return ``dest``.

    An existing ``<dest>.part`` (an interrupted earlier download) is resumed where the server
    supports HTTP ranges; the part is kept when the connection breaks, so the next call goes on
    from there.

    Args:
        url: what to fetch (``http``, ``https`` or ``file`` URL).
        dest: where the verified file ends up; missing parent folders are created.
        md5: the expected hex MD5 of the downloaded bytes (case-insensitive).
        timeout: seconds to wait for the connection and for each read.

    Returns:
        ``dest``, complete and verified.

    Raises:
        DataError: if the download fails (the message names the URL, the folder the file was
            meant for and how to supply it by hand) or its checksum does not match (the
            message names the URL and both checksums; nothing is kept).

    Example:
        >>> download_file(  # doctest: +SKIP
        ...     "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        ...     Path("data/MNIST/raw/t10k-labels-idx1-ubyte.gz"),
        ...     "ec29112dd5afa0611ce80d1b7f02629c",
        ... )
        PosixPath('data/MNIST/raw/t10k-labels-idx1-ubyte.gz')
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        resumed = part.is_file() and part.stat().st_size > 0
    except OSError as err:
        raise DataError(
            f"cannot prepare {dest} for download: {err}; choose a writable data directory "
            "with --data-dir DIR or ROBUSTLAB_DATA=DIR"
        ) from err

    actual = _fetch(url, dest, part, resume=resumed, timeout=timeout)
    if actual != md5.lower() and resumed:
        part.unlink(missing_ok=True)  # the kept part did not belong to this file: start over
        actual = _fetch(url, dest, part, resume=False, timeout=timeout)
    if actual != md5.lower():
        part.unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {url}: expected md5 {md5.lower()}, got {actual}. The "
            "download was corrupted or the server sent a different file; nothing was kept. "
            f"Try again, or put a good copy of the file at {dest} yourself"
        )
    try:
        os.replace(part, dest)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise _write_error(dest, err) from err
    return dest


def _fetch(url: str, dest: Path, part: Path, *, resume: bool, timeout: float) -> str:
    """Stream ``url`` into ``part`` (appending to it when resuming); return the part's MD5."""
    offset = part.stat().st_size if resume and part.is_file() else 0
    digest = hashlib.md5(usedforsecurity=False)
    if offset:
        _hash_file(part, digest)
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == _RANGE_NOT_SATISFIABLE and offset:
            part.unlink(missing_ok=True)  # the part is as long as the file or longer: stale
            return _fetch(url, dest, part, resume=False, timeout=timeout)
        raise _network_error(url, dest, err) from err
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise _network_error(url, dest, err) from err
    with response:
        appending = offset > 0 and _range_start(response) == offset
        if not appending:
            digest = hashlib.md5(usedforsecurity=False)
        try:
            out = part.open("ab" if appending else "wb")
        except OSError as err:
            raise _write_error(part, err) from err
        received = 0
        with out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _network_error(url, dest, err, kept=part) from err
                if not chunk:
                    break
                received += len(chunk)
                digest.update(chunk)
                try:
                    out.write(chunk)
                except OSError as err:
                    raise _write_error(part, err) from err
        # http.client ends a body cut short by the server silently: compare with its length.
        announced = str(response.headers.get("Content-Length", "")).strip()
        if announced.isdigit() and received < int(announced):
            cut = http.client.IncompleteRead(b"", int(announced) - received)
            raise _network_error(url, dest, cut, kept=part)
    return digest.hexdigest()


def _range_start(response: object) -> int | None:
    """The first byte a ``206 Partial Content`` response carries, else None."""
    if getattr(response, "status", None) != _PARTIAL_CONTENT:
        return None
    headers = getattr(response, "headers", None)
    content_range = headers.get("Content-Range", "") if headers is not None else ""
    unit, _, spec = str(content_range).partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _hash_file(path: Path, digest: Any) -> None:
    try:
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"cannot read the partial download {path}: {err}") from err


def _network_error(url: str, dest: Path, err: BaseException, kept: Path | None = None) -> DataError:
    reason: object = err
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        reason = err.reason  # e.g. "[Errno 111] Connection refused" rather than "<urlopen ...>"
    resume = f" The partial download {kept} is kept and resumed next time." if kept else ""
    return DataError(
        f"download failed: {url} ({reason}); it was to be saved in the data folder "
        f"{dest.parent}.{resume} Without network access, supply the file by hand: copy it to "
        f"{dest}, "
        "or point robustlab at a data directory that already has it with --data-dir DIR or "
        "ROBUSTLAB_DATA=DIR"
    )


def _write_error(path: Path, err: OSError) -> DataError:
    return DataError(
        f"cannot write {path}: {err.strerror or err}; free some disk space or choose a "
        "writable data directory with --data-dir DIR or ROBUSTLAB_DATA=DIR"
    )
