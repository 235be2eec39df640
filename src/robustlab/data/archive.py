"""Safe extraction of tar and zip archives, and fetching a dataset's archive when it is missing.

:func:`extract_archive` never writes outside the target folder: it rejects absolute member
names, ``..`` components, symbolic and hard links that resolve outside the target, and device
files or FIFOs, each with a :class:`~robustlab.errors.DataError` naming the archive and the
member. Members are written one by one (no ``extractall``), never through a link and never in
place of an earlier link, so a link cannot be re-pointed after it was checked; once the whole
archive is unpacked every link must resolve to something inside it. The archive is unpacked
into a hidden staging folder inside the target and moved into place only when every member
succeeded, so an interrupted or rejected extraction never leaves a half-extracted dataset that
looks complete. Moving it in never enters, replaces or writes through a link already in the
target (left there by an earlier archive or by hand), and each moved link is checked again
against what the target already held.

:func:`ensure_extracted` is what the archive-based datasets (CIFAR-10, GTSRB) call: it extracts
a local copy of the official archive, or downloads it first (MD5-verified, resumable; see
:mod:`robustlab.data.download`) when allowed, and otherwise says exactly which file to put where.

Example:
    >>> import io, tarfile, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with tarfile.open(folder / "a.tar.gz", "w:gz") as tar:
    ...     info = tarfile.TarInfo("data/hello.txt")
    ...     info.size = 5
    ...     tar.addfile(info, io.BytesIO(b"hello"))
    >>> extract_archive(folder / "a.tar.gz", folder / "out")
    ['data/hello.txt']
    >>> (folder / "out" / "data" / "hello.txt").read_text()
    'hello'
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from robustlab.data.download import download_file
from robustlab.errors import DataError
from robustlab.paths import DATA_ENV

__all__ = ["ArchiveSource", "ensure_extracted", "extract_archive"]

_COPY_CHUNK = 1 << 20
_ZIP_SYMLINK = 0o120000
_FIX = "delete it and download it again, or put an intact copy in its place"


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Extract a zip or tar archive (plain, gzip, bzip2 or xz) into ``dest``, safely.

    Existing files in ``dest`` with the same names are replaced; other files are left alone.

    Args:
        archive: the archive file; the format is recognised from its content.
        dest: the target folder (created if missing).

    Returns:
        The member paths extracted (folders excluded), ``/``-separated, in archive order.

    Raises:
        DataError: if the archive is not a zip or tar file, is damaged or truncated, or has a
            member that would land outside ``dest`` (absolute path, ``..``, a link leaving
            ``dest`` or not resolving at all), replaces or is written through a link, or is a
            device file or FIFO; also if a member would go through or replace a link already
            in ``dest``. Nothing is moved into ``dest`` then, except in the one case found only
            after moving: a link resolving outside ``dest`` next to its earlier contents, which
            is removed again.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".part", dir=dest))
    except OSError as err:
        raise DataError(
            f"cannot extract {archive} into {dest}: {err.strerror or err}; choose a writable "
            f"data directory with --data-dir DIR or {DATA_ENV}=DIR"
        ) from err
    target = _Target(staging, archive)
    try:
        with _reading_errors(archive):
            if zipfile.is_zipfile(archive):
                written = _extract_zip(archive, target)
            elif tarfile.is_tarfile(archive):
                written = _extract_tar(archive, target)
            else:
                raise DataError(
                    f"{archive} is neither a zip nor a tar archive (an incomplete download or a "
                    f"saved error page?); {_FIX}"
                )
            links = target.check_links()
            _merge(target, dest, written, links)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


@contextmanager
def _reading_errors(archive: Path) -> Iterator[None]:
    try:
        yield
    except DataError:
        raise  # already says what is wrong (DataError is an OSError: keep it from below)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as err:
        raise DataError(f"{archive} is damaged or incomplete ({err}); {_FIX}") from err
    except OSError as err:
        raise DataError(
            f"cannot extract {archive}: {err.strerror or err}; the archive is damaged, or the "
            f"data directory is not writable or full ({DATA_ENV}=DIR or --data-dir DIR picks "
            "another)"
        ) from err


class _Target:
    """The staging folder: turns member names into paths that provably stay inside it."""

    def __init__(self, root: Path, archive: Path) -> None:
        self.root = root
        self.real = os.path.realpath(root)
        self.archive = archive

    def reject(self, member: str, why: str) -> DataError:
        return DataError(
            f"{self.archive} is unsafe: member '{member}' {why}. robustlab extracted nothing; "
            "the archive is not the official one, so get it from the dataset's official site"
        )

    def parts(self, member: str) -> list[str]:
        text = member.replace("\\", "/")
        if "\x00" in text:
            raise self.reject(member, "has a NUL character in its name")
        if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
            raise self.reject(member, "has an absolute path")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.reject(member, "climbs out of the target folder with '..'")
        return parts

    def inside(self, path: str | Path) -> bool:
        return _within(os.path.realpath(path), self.real)

    def path(self, member: str, *, folder: bool = False) -> Path | None:
        """Where ``member`` goes, its folder created; None for the archive root itself.

        No member is written through a link or replaces one: a link checked when it was
        created could otherwise be re-pointed (or used as a path) once other members exist.
        """
        parts = self.parts(member)
        if not parts:
            return None
        current = self.root
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink():
                rel = current.relative_to(self.root).as_posix()
                raise self.reject(member, f"would be written through the link '{rel}'")
            if current.exists() and not current.is_dir():
                rel = current.relative_to(self.root).as_posix()
                raise self.reject(member, f"needs a folder '{rel}' where the archive has a file")
        target = current / parts[-1]
        if not self.inside(target.parent):
            raise self.reject(member, "would be written through a link that leaves the target")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            raise self.reject(member, "replaces an earlier link of the same name")
        if target.is_dir():
            if not folder:
                raise self.reject(member, "replaces an earlier folder of the same name")
        elif target.exists():
            target.unlink()  # a later member of the same name replaces an earlier one
        return target

    def directory(self, member: str) -> None:
        target = self.path(member, folder=True)
        if target is not None:
            target.mkdir(exist_ok=True)

    def file(self, member: str, source: IO[bytes]) -> bool:
        target = self.path(member)
        if target is None:
            raise self.reject(member, "is a file without a name")
        with target.open("xb") as out:
            shutil.copyfileobj(source, out, _COPY_CHUNK)
        return True

    def symlink(self, member: str, link: str) -> None:
        target = self.path(member)
        if target is None:
            raise self.reject(member, "is a link without a name")
        if link.startswith(("/", "\\")) or (len(link) > 1 and link[1] == ":"):
            raise self.reject(member, f"is a symbolic link to the absolute path '{link}'")
        if "\x00" in link or not self.inside(os.path.join(target.parent, link)):
            raise self.reject(member, f"is a symbolic link to '{link}', outside the target")
        os.symlink(link, target)

    def hardlink(self, member: str, link: str) -> None:
        source_parts = self.parts(link)
        source = self.root.joinpath(*source_parts)
        if not source_parts or not self.inside(source):
            raise self.reject(member, f"is a hard link to '{link}', outside the target")
        if not source.is_file():
            raise self.reject(member, f"is a hard link to '{link}', which is not an earlier file")
        target = self.path(member)
        if target is None:
            raise self.reject(member, "is a link without a name")
        shutil.copyfile(source, target)  # a copy: no inode shared with anything

    def check_links(self) -> list[str]:
        """Check every link of the finished tree; return their member paths.

        Each link was checked when it was created, but a link to a path that did not exist yet
        may resolve differently once the whole archive is unpacked: only the final tree counts.
        """
        links: list[str] = []
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    continue
                member = Path(path).relative_to(self.root).as_posix()
                link = os.readlink(path)
                try:
                    resolved = os.path.realpath(path, strict=True)
                except OSError:
                    raise self.reject(
                        member, f"is a symbolic link to '{link}', which the archive does not have"
                    ) from None
                if not _within(resolved, self.real):
                    raise self.reject(
                        member, f"is a symbolic link to '{link}', which resolves outside the target"
                    )
                links.append(member)
        return links


def _within(real: str, folder: str) -> bool:
    """Whether the real path ``real`` is ``folder`` (a real path) or lies inside it."""
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


def _extract_tar(archive: Path, target: _Target) -> list[str]:
    written: list[str] = []
    with tarfile.open(archive, "r:*") as tar:
        for info in tar:
            if info.isdir():
                target.directory(info.name)
            elif info.isreg():
                source = tar.extractfile(info)
                if source is None:
                    raise target.reject(info.name, "has no readable content")
                with source:
                    target.file(info.name, source)
                written.append("/".join(target.parts(info.name)))
            elif info.issym():
                target.symlink(info.name, info.linkname)
                written.append("/".join(target.parts(info.name)))
            elif info.islnk():
                target.hardlink(info.name, info.linkname)
                written.append("/".join(target.parts(info.name)))
            else:
                raise target.reject(info.name, "is a device file, FIFO or other special file")
    return written


def _extract_zip(archive: Path, target: _Target) -> list[str]:
    written: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                target.directory(info.filename)
                continue
            if kind == _ZIP_SYMLINK:
                link = zf.read(info).decode("utf-8", errors="replace")
                target.symlink(info.filename, link)
            elif kind not in (0, stat.S_IFREG):
                raise target.reject(info.filename, "is a device file, FIFO or other special file")
            else:
                with zf.open(info) as source:
                    target.file(info.filename, source)
            written.append("/".join(target.parts(info.filename)))
    return written


def _merge(target: _Target, dest: Path, written: list[str], links: list[str]) -> None:
    """Move the staged tree into ``dest``: folders merge, files and links replace files.

    Every move is planned before the first one happens, so a conflict leaves ``dest`` as it
    was. Nothing is moved into or through a link already in ``dest``, and such a link is never
    replaced (an identical one, resolving inside ``dest``, is kept): writing through a link
    left by an earlier archive could land anywhere.
    """
    real_dest = os.path.realpath(dest)
    moves: list[tuple[Path, Path]] = []
    _plan_merge(target, target.root, dest, real_dest, written, moves)
    for entry, final in moves:
        os.replace(entry, final)
    # Links resolve against what ``dest`` already held: check them in their final place.
    for member in links:
        final = dest.joinpath(*member.split("/"))
        if not _resolves_inside(final, real_dest) or _resolves_inside(final, target.real):
            link = os.readlink(final)
            final.unlink()
            raise DataError(
                f"{target.archive} is unsafe: member '{member}' is a symbolic link to '{link}', "
                f"which does not resolve inside {dest} next to the files already there; "
                "robustlab removed that link. Extract the official archive into an empty folder"
            )


def _plan_merge(
    target: _Target,
    folder: Path,
    dest: Path,
    real_dest: str,
    written: list[str],
    moves: list[tuple[Path, Path]],
) -> None:
    for entry in sorted(folder.iterdir()):
        final = dest / entry.name
        if final.is_symlink():
            if (
                entry.is_symlink()
                and os.readlink(entry) == os.readlink(final)
                and _resolves_inside(final, real_dest)
            ):
                continue
            raise _conflict(
                target,
                entry,
                written,
                f"would replace or be written through the existing link {final} -> "
                f"'{os.readlink(final)}', and robustlab never writes through links; remove "
                f"{final} (or extract into an empty folder) and try again",
            )
        if entry.is_dir() and not entry.is_symlink():
            if final.is_dir():
                _plan_merge(target, entry, final, real_dest, written, moves)
                continue
            if final.exists():
                raise _conflict(
                    target,
                    entry,
                    written,
                    f"needs {final} to be a folder, but it is a file; move the file away and try "
                    "again",
                )
        elif final.is_dir():
            raise _conflict(
                target,
                entry,
                written,
                f"is a file, but {final} is a folder; move the folder away and try again",
            )
        moves.append((entry, final))


def _conflict(target: _Target, entry: Path, written: list[str], why: str) -> DataError:
    """A clash between the staged ``entry`` and the target, naming the member concerned."""
    relative = entry.relative_to(target.root).as_posix()
    # The first member extracted at or under ``entry`` (a folder has no member of its own).
    member = next((m for m in written if m == relative or m.startswith(relative + "/")), relative)
    return DataError(f"cannot extract {target.archive}: member '{member}' {why}")


def _resolves_inside(path: Path, real_folder: str) -> bool:
    """Whether ``path`` exists, links followed, and its real path lies in ``real_folder``."""
    try:
        resolved = os.path.realpath(path, strict=True)
    except OSError:
        return False
    return _within(resolved, real_folder)


@dataclass(frozen=True)
class ArchiveSource:
    """An official dataset archive: where it comes from and its checksum."""

    title: str  # human name, e.g. "CIFAR-10"
    url: str
    md5: str

    @property
    def file_name(self) -> str:
        """The archive's file name, the last part of its URL."""
        return self.url.rsplit("/", 1)[-1]


def ensure_extracted(
    source: ArchiveSource, root: Path, wanted: Path, *, into: Path, download: bool
) -> None:
    """Make ``wanted`` exist by extracting ``source``'s archive into ``into``.

    A local ``<root>/<archive name>`` is extracted as it is (copies made by hand need not match
    the checksum, but must be sound archives); otherwise the archive is downloaded first when
    ``download`` is set, verified against its MD5, and kept beside the data.

    Args:
        source: the official archive.
        root: the data directory (named in messages).
        wanted: a file or folder the archive provides; nothing happens if it exists.
        into: where the archive is extracted.
        download: allow downloading the archive.

    Raises:
        DataError: if the archive is missing and cannot be downloaded (naming ``wanted``, the
            archive path and URL, and the data-directory options), is unsafe or damaged, or
            does not provide ``wanted``.
    """
    if wanted.exists():
        return
    archive = root / source.file_name
    if not archive.is_file():
        if not download:
            raise _missing(source, root, wanted, archive, "downloading is switched off")
        try:
            download_file(source.url, archive, source.md5)
        except DataError as err:
            raise _missing(source, root, wanted, archive, str(err)) from err
    extract_archive(archive, into)
    if not wanted.exists():
        raise DataError(
            f"{archive} was extracted into {into}, but {wanted} is still missing: it is not the "
            f"official {source.title} archive ({source.url}); delete it and download the "
            "official one"
        )


def _missing(
    source: ArchiveSource, root: Path, wanted: Path, archive: Path, reason: str
) -> DataError:
    return DataError(
        f"{source.title} data not found: {wanted} does not exist in the data directory {root}, "
        f"and {archive.name} could not be downloaded: {reason}.\n"
        f"Fix: put the official archive {source.url} at {archive} (robustlab extracts it), or "
        f"extract it yourself so that {wanted} exists, or use a data directory that has it "
        f"with --data-dir DIR or {DATA_ENV}=DIR"
    )
