r"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every report and run file (``report.md``, ``report.html``, ``results.csv``, the figures in
``report_files/``, ``models.json``, ``config.yaml``) is written to a temporary file in the same
folder and then renamed over the target with :func:`os.replace`, which is atomic on one file
system. A write that fails midway (a full disk, a killed process, an exception) leaves the
previous version of the file intact and removes its temporary file.

Temporary files are named ``.<stem>.<random>.tmp<suffix>``: hidden, unique per writer, and
with the target's suffix, so writers that pick the format from the name (Pillow, matplotlib)
write the right one.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text_atomic(folder / "notes.md", "# old\n")
    >>> write_text_atomic(folder / "notes.md", "# new\n")
    >>> (folder / "notes.md").read_text()
    '# new\n'
    >>> with atomic_path(folder / "data.bin") as tmp:
    ...     _ = tmp.write_bytes(b"\x00\x01")
    >>> sorted(p.name for p in folder.iterdir())
    ['data.bin', 'notes.md']
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "temporary_name", "write_bytes_atomic", "write_text_atomic"]


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary path beside ``path``, with the same suffix.

    Args:
        path: the file that will eventually be written.

    Returns:
        ``<folder>/.<stem>.<random>.tmp<suffix>`` (the file is not created).

    Example:
        >>> name = temporary_name("/runs/a/report.md").name
        >>> name.startswith(".report.") and name.endswith(".tmp.md")
        True
    """
    target = Path(path)
    return target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    r"""Yield a temporary path to write; on success it replaces ``path`` atomically.

    The caller creates and fills the yielded file (with any writer). When the ``with`` block
    ends normally the file is renamed over ``path``; when it raises (``OSError`` for a full
    disk, ``KeyboardInterrupt``, ...) the temporary file is removed, ``path`` is left as it
    was, and the exception propagates; an ``OSError`` that names no file (a failed
    ``write``) or the temporary file is raised again naming ``path``, with the same ``errno``.

    Args:
        path: the file to write; its folder must exist.

    Yields:
        The temporary path, in the same folder as ``path``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "table.csv"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("a,b\n1,2\n")
        >>> target.read_text()
        'a,b\n1,2\n'
    """
    target = Path(path)
    tmp = temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None or Path(err.filename) == tmp:
            # A failed write() names no file, a failed open the temporary one: name the target.
            raise OSError(err.errno, err.strerror or str(err), str(target)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    r"""Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to write; its folder must exist.
        data: the whole new content.

    Raises:
        OSError: if the temporary file cannot be written or renamed (``path`` is unchanged).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "figure.png"
        >>> write_bytes_atomic(target, b"\x89PNG")
        >>> target.read_bytes()
        b'\x89PNG'
    """
    with atomic_path(path) as tmp, open(tmp, "xb") as file:
        file.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    r"""Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to write; its folder must exist.
        text: the whole new content.
        encoding: how the text is encoded (UTF-8 by default, whatever the locale).

    Raises:
        OSError: if the temporary file cannot be written or renamed (``path`` is unchanged).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "config.yaml"
        >>> write_text_atomic(target, "name: demo\n")
        >>> target.read_text()
        'name: demo\n'
    """
    write_bytes_atomic(path, text.encode(encoding))
