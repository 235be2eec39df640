"""Safe archive extraction, resumable downloads and the archive-fetching helper."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustlab.data import archive as archive_module
from robustlab.data.archive import ArchiveSource, ensure_extracted, extract_archive
from robustlab.data.download import download_file
from robustlab.errors import DataError

# --- helpers ---------------------------------------------------------------------------------


def _tar(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = contents.get(info.name)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A target folder and a sibling folder that nothing may be written into."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    return dest, outside


def _assert_nothing_written(dest: Path, outside: Path) -> None:
    assert list(outside.iterdir()) == []
    # No staging folder or partial file survives a rejected archive.
    assert not dest.exists() or list(dest.iterdir()) == []


# --- extraction ------------------------------------------------------------------------------


def test_tar_extracts_files_folders_and_inside_links(tmp_path: Path) -> None:
    folder = _file("top/")
    folder.type = tarfile.DIRTYPE
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [
            folder,
            _file("top/a.txt"),
            _file("top/sub/b.bin"),
            _link("top/alias", "sub"),
            _link("top/copy.txt", "top/a.txt", tarfile.LNKTYPE),
        ],
        {"top/a.txt": b"alpha", "top/sub/b.bin": b"\x00\x01"},
    )
    dest = tmp_path / "dest"
    written = extract_archive(archive, dest)
    assert written == ["top/a.txt", "top/sub/b.bin", "top/alias", "top/copy.txt"]
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "alias").is_symlink()
    assert (dest / "top" / "alias" / "b.bin").read_bytes() == b"\x00\x01"
    copy = dest / "top" / "copy.txt"
    assert copy.read_bytes() == b"alpha" and not copy.is_symlink()
    assert os.stat(copy).st_nlink == 1
    assert sorted(p.name for p in dest.iterdir()) == ["top"]  # no staging folder left


def test_zip_extracts_and_merges_into_existing_folders(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "GTSRB" / "Other").mkdir(parents=True)
    (dest / "GTSRB" / "Other" / "keep.txt").write_text("mine")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("GTSRB/Final_Test/Images/00000.ppm", b"P6 ...")
        zf.writestr("GTSRB/Final_Test/Images/", b"")
    assert extract_archive(archive, dest) == ["GTSRB/Final_Test/Images/00000.ppm"]
    assert (dest / "GTSRB" / "Final_Test" / "Images" / "00000.ppm").read_bytes() == b"P6 ..."
    assert (dest / "GTSRB" / "Other" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("members", "contents", "problem"),
    [
        ([_file("../outside/evil.txt")], {"../outside/evil.txt": b"x"}, "'..'"),
        ([_file("ok/../../outside/evil.txt")], {"ok/../../outside/evil.txt": b"x"}, "'..'"),
        ([_file("/abs/evil.txt")], {"/abs/evil.txt": b"x"}, "absolute path"),
        (
            [_link("escape", "../outside"), _file("escape/evil.txt")],
            {"escape/evil.txt": b"x"},
            "symbolic link to '../outside', outside the target",
        ),
        ([_link("etc", "/etc")], {}, "symbolic link to the absolute path '/etc'"),
        (
            [_link("deep", "a/../../outside")],
            {},
            "symbolic link to 'a/../../outside', outside the target",
        ),
        (
            [_file("sub/a.txt"), _link("d", "sub"), _file("d/b.txt")],
            {"sub/a.txt": b"a", "d/b.txt": b"b"},
            "member 'd/b.txt' would be written through the link 'd'",
        ),
        (
            [_file("d"), _link("d", "a")],
            {"d": b"x"},
            "symbolic link to 'a', which the archive does not have",
        ),
        (
            [_link("x", "d/.."), _link("d", ".")],
            {},
            "member 'x' is a symbolic link to 'd/..', which resolves outside the target",
        ),
        ([_link("loop", "loop")], {}, "member 'loop' is a symbolic link to 'loop', which"),
        ([_link("hard", "../outside/secret", tarfile.LNKTYPE)], {}, "'..'"),
        ([_link("hard", "missing.txt", tarfile.LNKTYPE)], {}, "not an earlier file"),
    ],
)
def test_malicious_tar_is_rejected(
    tmp_path: Path,
    layout: tuple[Path, Path],
    members: list[tarfile.TarInfo],
    contents: dict[str, bytes],
    problem: str,
) -> None:
    dest, outside = layout
    archive = _tar(tmp_path / "evil.tar.gz", members, contents)
    with pytest.raises(DataError, match="is unsafe") as err:
        extract_archive(archive, dest)
    assert problem in str(err.value)
    assert str(archive) in str(err.value)
    _assert_nothing_written(dest, outside)


def test_tar_with_a_good_file_before_a_bad_one_writes_nothing(
    tmp_path: Path, layout: tuple[Path, Path]
) -> None:
    dest, outside = layout
    archive = _tar(
        tmp_path / "evil.tar",
        [_file("data/good.txt"), _file("../outside/evil.txt")],
        {"data/good.txt": b"good", "../outside/evil.txt": b"evil"},
    )
    with pytest.raises(DataError, match=re.escape("'..'")):
        extract_archive(archive, dest)
    _assert_nothing_written(dest, outside)


def _plain_tar(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info in members:
            data = contents.get(info.name)
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _escaped(top: Path, dest: Path) -> list[Path]:
    """Every ESCAPED.txt under ``top`` that is not inside ``dest``."""
    return [p for p in top.rglob("ESCAPED.txt") if dest.resolve() not in p.resolve().parents]


def _reviewer_archives(tmp_path: Path) -> tuple[Path, Path]:
    """The reported escape: a link swapped within one archive, then a second archive."""
    first = _plain_tar(
        tmp_path / "a.tar", [_link("d", "a/b"), _link("x", "d/../.."), _link("d", ".")], {}
    )
    second = _plain_tar(tmp_path / "b.tar", [_file("x/ESCAPED.txt")], {"x/ESCAPED.txt": b"pwn"})
    return first, second


def test_a_link_replaced_within_one_archive_is_rejected(tmp_path: Path) -> None:
    first, second = _reviewer_archives(tmp_path)
    dest = tmp_path / "data" / "target"
    with pytest.raises(DataError, match="is unsafe") as err:
        extract_archive(first, dest)
    message = str(err.value)
    assert "member 'd' replaces an earlier link of the same name" in message
    assert str(first) in message
    assert list(dest.iterdir()) == []
    # The second archive of the report now lands inside the target, as it should.
    assert extract_archive(second, dest) == ["x/ESCAPED.txt"]
    assert not (dest / "x").is_symlink()
    assert (dest / "x" / "ESCAPED.txt").read_bytes() == b"pwn"
    assert _escaped(tmp_path, dest) == []


def test_a_link_replaced_within_one_zip_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(archive, "w") as zf:
            for name, target in (("d", "a/b"), ("x", "d/../.."), ("d", ".")):
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o120777 << 16
                zf.writestr(info, target)
    dest = tmp_path / "data" / "target"
    with pytest.raises(DataError, match="member 'd' replaces an earlier link"):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("link", ["../..", "inside"])
def test_a_link_already_in_the_target_is_never_written_through(tmp_path: Path, link: str) -> None:
    # What an earlier, unsafe extraction (or a person) may have left in the target.
    dest = tmp_path / "data" / "target"
    (dest / "inside").mkdir(parents=True)
    (dest / "x").symlink_to(link)
    _, second = _reviewer_archives(tmp_path)
    with pytest.raises(DataError) as err:
        extract_archive(second, dest)
    message = str(err.value)
    assert "member 'x/ESCAPED.txt' would replace or be written through the existing link" in message
    assert str(dest / "x") in message and str(second) in message
    assert _escaped(tmp_path, dest) == []
    assert not (dest / "inside" / "ESCAPED.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["inside", "x"]  # no staging folder left


def test_a_file_is_never_written_over_a_link_in_the_target(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (dest / "f.txt").symlink_to(victim)
    archive = _plain_tar(tmp_path / "f.tar", [_file("f.txt")], {"f.txt": b"new"})
    with pytest.raises(
        DataError, match=re.escape("member 'f.txt' would replace or be written through")
    ):
        extract_archive(archive, dest)
    assert victim.read_text() == "keep"
    assert (dest / "f.txt").is_symlink()


def test_the_same_inside_link_can_be_extracted_twice(tmp_path: Path) -> None:
    archive = _plain_tar(
        tmp_path / "ok.tar",
        [_file("top/sub/b.bin"), _link("top/alias", "sub")],
        {"top/sub/b.bin": b"b"},
    )
    dest = tmp_path / "dest"
    for _ in range(2):
        assert extract_archive(archive, dest) == ["top/sub/b.bin", "top/alias"]
    assert os.readlink(dest / "top" / "alias") == "sub"
    assert (dest / "top" / "alias" / "b.bin").read_bytes() == b"b"


def test_a_moved_link_resolving_outside_is_removed(tmp_path: Path) -> None:
    # The last line of defence, after the moves: a staged tree whose checks were bypassed.
    dest, staging = tmp_path / "data" / "target", tmp_path / "staging"
    dest.mkdir(parents=True)
    staging.mkdir()
    (staging / "x").symlink_to("../..")
    target = archive_module._Target(staging, tmp_path / "evil.tar")
    with pytest.raises(
        DataError, match=re.escape("member 'x' is a symbolic link to '../..', which does")
    ):
        archive_module._merge(target, dest, ["x"], ["x"])
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_files_and_fifos_are_rejected(
    tmp_path: Path, layout: tuple[Path, Path], kind: bytes
) -> None:
    dest, outside = layout
    info = _file("dev/null")
    info.type = kind
    archive = _tar(tmp_path / "dev.tar.gz", [info], {})
    with pytest.raises(DataError, match="device file, FIFO"):
        extract_archive(archive, dest)
    _assert_nothing_written(dest, outside)


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../outside/evil.txt", "'..'"), ("/abs/evil.txt", "absolute path"), ("C:/x", "absolute")],
)
def test_malicious_zip_names_are_rejected(
    tmp_path: Path, layout: tuple[Path, Path], name: str, problem: str
) -> None:
    dest, outside = layout
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    with pytest.raises(DataError, match=re.escape(problem)) as err:
        extract_archive(archive, dest)
    assert name in str(err.value)
    _assert_nothing_written(dest, outside)


def test_zip_symlink_leaving_the_target_is_rejected(
    tmp_path: Path, layout: tuple[Path, Path]
) -> None:
    dest, outside = layout
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("escape")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "../outside")
        zf.writestr("escape/evil.txt", b"evil")
    with pytest.raises(DataError, match=re.escape("symbolic link to '../outside'")):
        extract_archive(archive, dest)
    _assert_nothing_written(dest, outside)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_archives(tmp_path: Path, damage: str) -> None:
    good = _tar(
        tmp_path / "good.tar.gz", [_file("a.bin")], {"a.bin": os.urandom(200_000)}
    ).read_bytes()
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(good[: len(good) // 2] if damage == "truncate" else b"<html>404</html>")
    with pytest.raises(DataError) as err:
        extract_archive(archive, tmp_path / "dest")
    message = str(err.value)
    assert str(archive) in message
    assert ("damaged or incomplete" in message) or ("neither a zip nor a tar" in message)
    assert list((tmp_path / "dest").iterdir()) == []


def _zip_bytes(tmp_path: Path) -> bytes:
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("GTSRB/a.bin", os.urandom(200_000))
    return archive.read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_zip(tmp_path: Path, damage: str) -> None:
    good = _zip_bytes(tmp_path)
    archive = tmp_path / "bad.zip"
    if damage == "truncate":
        archive.write_bytes(good[: len(good) // 2])
    else:
        # Flip bytes in the middle of the member's data: the directory is intact, the CRC not.
        middle = len(good) // 2
        archive.write_bytes(good[:middle] + bytes(b ^ 0xFF for b in good[middle:][:64])
                            + good[middle + 64 :])  # fmt: skip
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert str(archive) in message
    if damage == "truncate":
        assert "neither a zip nor a tar archive (an incomplete download" in message
    else:
        assert "damaged or incomplete" in message
    assert "delete it and download it again" in message
    assert list(dest.iterdir()) == []


# --- resumable downloads -------------------------------------------------------------------

PAYLOAD = os.urandom(300_000)
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` at any path, honouring ``Range: bytes=N-``; can cut one transfer."""

    payload: bytes = PAYLOAD
    cut_after: int | None = None
    ranges: list[str | None]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).ranges.append(self.headers.get("Range"))
        payload = type(self).payload
        start = 0
        wanted = self.headers.get("Range")
        if wanted:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def range_server() -> Iterator[tuple[type[_RangeHandler], str]]:
    handler = type("Handler", (_RangeHandler,), {"ranges": [], "cut_after": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/file"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_interrupted_download_keeps_the_part_and_resumes(
    tmp_path: Path, range_server: tuple[type[_RangeHandler], str]
) -> None:
    handler, url = range_server
    handler.cut_after = 100_000
    dest = tmp_path / "data" / "file.bin"
    part = dest.with_name("file.bin.part")
    with pytest.raises(DataError, match="kept and resumed next time") as err:
        download_file(url, dest, MD5, timeout=5)
    assert str(part) in str(err.value)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:100_000]

    assert download_file(url, dest, MD5, timeout=5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()
    assert handler.ranges == [None, "bytes=100000-"]


def test_stale_part_fails_the_checksum_and_restarts(
    tmp_path: Path, range_server: tuple[type[_RangeHandler], str]
) -> None:
    handler, url = range_server
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"not the start of this file")
    download_file(url, dest, MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert handler.ranges == ["bytes=26-", None]


def test_part_longer_than_the_file_restarts(
    tmp_path: Path, range_server: tuple[type[_RangeHandler], str]
) -> None:
    handler, url = range_server
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 10))
    download_file(url, dest, MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert handler.ranges == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_resumed_download_with_wrong_checksum_keeps_nothing(
    tmp_path: Path, range_server: tuple[type[_RangeHandler], str]
) -> None:
    _, url = range_server
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:1000])
    with pytest.raises(DataError, match="checksum mismatch"):
        download_file(url, dest, "0" * 32, timeout=5)
    assert list(tmp_path.iterdir()) == []


# --- ensure_extracted ----------------------------------------------------------------------


def _source(url: str = "http://127.0.0.1:9/thing.tar.gz", md5: str = "0" * 32) -> ArchiveSource:
    return ArchiveSource("Thing", url, md5)


def test_ensure_extracted_offline_names_path_archive_and_fix(tmp_path: Path) -> None:
    wanted = tmp_path / "thing-data"
    with pytest.raises(DataError) as err:
        ensure_extracted(_source(), tmp_path, wanted, into=tmp_path, download=False)
    message = str(err.value)
    assert str(wanted) in message
    assert "downloading is switched off" in message
    assert str(tmp_path / "thing.tar.gz") in message
    assert "http://127.0.0.1:9/thing.tar.gz" in message
    assert "--data-dir" in message and "ROBUSTLAB_DATA" in message


def test_ensure_extracted_uses_a_local_archive(tmp_path: Path) -> None:
    _tar(tmp_path / "thing.tar.gz", [_file("thing-data/x.txt")], {"thing-data/x.txt": b"x"})
    wanted = tmp_path / "thing-data"
    ensure_extracted(_source(), tmp_path, wanted, into=tmp_path, download=False)
    assert (wanted / "x.txt").read_bytes() == b"x"


def test_ensure_extracted_rejects_an_archive_without_the_data(tmp_path: Path) -> None:
    _tar(tmp_path / "thing.tar.gz", [_file("other/x.txt")], {"other/x.txt": b"x"})
    with pytest.raises(DataError, match="is still missing: it is not the official Thing"):
        ensure_extracted(
            _source(), tmp_path, tmp_path / "thing-data", into=tmp_path, download=False
        )


def test_ensure_extracted_downloads_verifies_and_extracts(
    tmp_path: Path, range_server: tuple[type[_RangeHandler], str]
) -> None:
    handler, url = range_server
    served = _tar(
        tmp_path / "served.tar.gz", [_file("thing-data/x.txt")], {"thing-data/x.txt": b"payload"}
    )
    handler.payload = served.read_bytes()
    root = tmp_path / "data"
    md5 = hashlib.md5(handler.payload).hexdigest()
    source = ArchiveSource("Thing", url.replace("/file", "/thing.tar.gz"), md5)
    ensure_extracted(source, root, root / "thing-data", into=root, download=True)
    assert (root / "thing-data" / "x.txt").read_bytes() == b"payload"
    assert (root / "thing.tar.gz").is_file()  # kept beside the data
