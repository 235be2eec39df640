"""Bad input, part files: images, files robustlab reads, full disks and Markdown tables.

Each case builds its input in a fresh folder and says what must happen (see ``bad_input``).
Cases that need a finished run directory copy one made once per module (a tiny study on the
embedded MNIST sample) with its own model cache, so nothing is trained per case.
"""

from __future__ import annotations

import errno
import hashlib
import html
import io
import json
import re
import shutil
import sqlite3
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bad_input import Case, accepted, check, ids, refused
from robustlab.study.runner import run_study

# --- shared state: the finished run and the case's monkeypatch --------------------------------

_BASE: dict[str, Path] = {}
_PATCH: dict[str, pytest.MonkeyPatch] = {}
_CACHE_ENV = {"ROBUSTLAB_CACHE": "{folder}/cache"}

STUDY = """\
name: tiny
seed: 0
dataset: {{name: mnist-sample, test_limit: 40, train_limit: 200}}
models:
  - {{name: cnn, architecture: lin2022_cnn, epochs: [1]}}
degradations:
  - name: salt_pepper
    label: {label}
    grid: {{amount: [0.2]}}
defenses: [none]
trials: 1
examples: 2
"""


@pytest.fixture(scope="module", autouse=True)
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One finished tiny run (and the model cache it trained into) for every case to copy."""
    from robustlab.train.cache import ModelCache

    top = tmp_path_factory.mktemp("base")
    (top / "tiny.yaml").write_text(STUDY.format(label="noise"))
    run_study(top / "tiny.yaml", run_dir=top / "run", device="cpu", cache=ModelCache(top / "cache"))
    _BASE.update(run=top / "run", cache=top / "cache", study=top / "tiny.yaml")
    yield
    _BASE.clear()


def _copy_run(folder: Path, with_cache: bool = True) -> Path:
    shutil.copytree(_BASE["run"], folder / "run")
    shutil.copy(_BASE["study"], folder / "tiny.yaml")
    if with_cache:
        shutil.copytree(_BASE["cache"], folder / "cache")
    return folder / "run"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _remember(folder: Path, *names: str) -> None:
    """Record the digests of run files, to check that a refusal left them untouched."""
    run = folder / "run"
    digests = {n: _digest(run / n) for n in names if (run / n).is_file()}
    (folder / "digests.json").write_text(json.dumps(digests))


def _untouched(folder: Path) -> None:
    digests = json.loads((folder / "digests.json").read_text())
    for name, digest in digests.items():
        assert _digest(folder / "run" / name) == digest, f"{name} was modified"
    leftovers = [p.name for p in (folder / "run").rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def _cells(folder: Path) -> int:
    with sqlite3.connect(folder / "run" / "results.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])


# --- images --------------------------------------------------------------------------------


def _save(folder: Path, name: str, array: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(folder / name)
    return folder / name


def _grey(shape: tuple[int, int] = (12, 16)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def _ramp16() -> np.ndarray:
    return (np.arange(12 * 16, dtype=np.uint32).reshape(12, 16) * 257 % 65536).astype(np.uint16)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is empty)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _degrade(name: str, out: str = "out.png", *spec: str) -> list[str]:
    return ["degrade", name, "-o", out, *[a for s in spec for a in ("-d", s)]]


def _written(name: str, mode: str, check: Callable[[np.ndarray], bool] | None = None) -> Any:
    def verify(folder: Path, output: str) -> None:
        with Image.open(folder / name) as image:
            assert image.mode == mode, f"{name} is {image.mode}, expected {mode}"
            pixels = np.asarray(image)
        assert check is None or check(pixels), f"{name} has wrong pixels"
        assert f"wrote {name}" in " ".join(output.split())

    return verify


def _warned(*fragments: str, name: str = "out.png", mode: str = "RGB") -> Any:
    inner = _written(name, mode)

    def verify(folder: Path, output: str) -> None:
        inner(folder, output)
        flat = " ".join(output.lower().split())
        for fragment in fragments:
            assert fragment.lower() in flat, f"output lacks {fragment!r}:\n{output}"

    return verify


def _b16(folder: Path) -> list[str]:
    Image.fromarray(_ramp16()).save(folder / "deep.png")
    return _degrade("deep.png")


def _b16_jpeg(folder: Path) -> list[str]:
    Image.fromarray(_ramp16()).save(folder / "deep.png")
    return _degrade("deep.png", "out.jpg", "gaussian_noise:sigma=0.05")


def _b16_tiff(folder: Path) -> list[str]:
    Image.fromarray(_ramp16()).save(folder / "deep.tif")
    return _degrade("deep.tif", "out.tif", "gaussian_noise:sigma=0.05")


def _float_tiff(values: np.ndarray, out: str = "out.tif") -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        Image.fromarray(values.astype(np.float32)).save(folder / "in.tif")
        return _degrade("in.tif", out)

    return build


_FLOATS = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)


def _bomb(folder: Path) -> list[str]:
    (folder / "big.png").write_bytes(_png_claiming(100_000, 100_000))
    return _degrade("big.png")


def _rgba(folder: Path) -> list[str]:
    rgba = np.dstack([_rgb(), np.full((12, 16), 100, np.uint8)])
    _save(folder, "rgba.png", rgba)
    return _degrade("rgba.png", "out.png", "salt_pepper:amount=0.1")


def _la(folder: Path) -> list[str]:
    _save(folder, "la.png", np.dstack([_grey(), _grey()]), "LA")
    return _degrade("la.png")


def _palette(folder: Path) -> list[str]:
    _save(folder, "pal.png", _rgb(), "P")
    return _degrade("pal.png")


def _palette_transparent(folder: Path) -> list[str]:
    image = Image.fromarray(_rgb()).convert("P")
    image.save(folder / "pal.png", transparency=0)
    return _degrade("pal.png")


def _one_bit(folder: Path) -> list[str]:
    _save(folder, "bw.png", (_grey() > 127).astype(np.uint8) * 255, "1")
    return _degrade("bw.png", "out.png", "gaussian_noise:sigma=0.1")


def _cmyk(folder: Path) -> list[str]:
    Image.fromarray(_rgb()).convert("CMYK").save(folder / "print.jpg")
    return _degrade("print.jpg")


def _empty_png(folder: Path) -> list[str]:
    (folder / "zero.png").write_bytes(b"")
    return _degrade("zero.png")


def _text_png(folder: Path) -> list[str]:
    (folder / "notes.png").write_text("these are my notes, not an image\n")
    return _degrade("notes.png")


def _truncated(folder: Path) -> list[str]:
    _save(folder, "full.png", np.random.default_rng(2).integers(0, 256, (64, 64), np.uint8))
    data = (folder / "full.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    return _degrade("cut.png")


def _folder_input(folder: Path) -> list[str]:
    (folder / "pics").mkdir()
    _save(folder / "pics", "a.png", _grey())
    return _degrade("pics")


def _missing(folder: Path) -> list[str]:
    return _degrade("nowhere.png")


def _out_under_file(folder: Path) -> list[str]:
    _save(folder, "in.png", _grey())
    (folder / "blocker").write_text("a file, not a folder")
    return _degrade("in.png", "blocker/out.png")


def _out_ext(ext: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        _save(folder, "in.png", _grey())
        return _degrade("in.png", f"out{ext}")

    return build


def _out_is_folder(folder: Path) -> list[str]:
    _save(folder, "in.png", _grey())
    (folder / "results").mkdir()
    return _degrade("in.png", "results")


def _out_kept_on_error(folder: Path) -> list[str]:
    _save(folder, "in.png", _grey())
    (folder / "out.png").write_bytes(b"old")
    return _degrade("in.png", "out.png", "gaussian_noise:sigma=-3")


def _old_bytes_kept(folder: Path) -> None:
    assert (folder / "out.png").read_bytes() == b"old"
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]


def _read_image_call(name: str, make: Callable[[Path], None]) -> Callable[[Path], Any]:
    def build(folder: Path) -> Callable[[], Any]:
        from robustlab.data.folder import read_image

        make(folder)
        return lambda: read_image(folder / name)

    return build


def _scaled_16bit(folder: Path, image: Any) -> None:
    assert image.mode == "I;16" and image.bits == 16
    expected = (_ramp16().astype(np.float64) / 257).round() / 255  # 8-bit, as datasets decode
    assert np.allclose(image.pixels[0].numpy(), expected, atol=1e-6)


def _is_ramp(pixels: np.ndarray) -> bool:
    return bool(np.array_equal(pixels, _ramp16()))


IMAGE_CASES = [
    Case("16bit-png-kept-16bit", "degrade", "images", _b16,
         accepted(_warned("16-bit grey PNG", mode="I;16"))),
    Case("16bit-png-exact", "degrade", "images", _b16, accepted(_written("out.png", "I;16",
         _is_ramp))),
    Case("16bit-to-jpeg-says-8bit", "degrade", "images", _b16_jpeg,
         accepted(_warned("8-bit grey JPEG", "16-bit pixels", ".png or .tif", name="out.jpg",
                          mode="L"))),
    Case("16bit-tiff", "degrade", "images", _b16_tiff,
         accepted(_written("out.tif", "I;16", lambda p: 0 < p.max() <= 65535 and p.max() > 255))),
    Case("float-tiff-in-range", "degrade", "images", _float_tiff(_FLOATS),
         accepted(_written("out.tif", "F", lambda p: np.allclose(p, _FLOATS)))),
    Case("float-tiff-to-png-16bit", "degrade", "images", _float_tiff(_FLOATS, "out.png"),
         accepted(_warned("16-bit grey PNG", "float pixels", ".tif", mode="I;16"))),
    Case("float-tiff-out-of-range", "degrade", "images", _float_tiff(_FLOATS * 255),
         refused("in.tif", "float pixels from 0 to 255", "outside [0, 1]", "rescale")),
    Case("float-tiff-negative", "degrade", "images", _float_tiff(_FLOATS - 0.5),
         refused("in.tif", "outside [0, 1]", "rescale")),
    Case("float-tiff-nan", "degrade", "images",
         _float_tiff(np.where(_FLOATS > 0.5, np.nan, _FLOATS)),
         refused("in.tif", "NaN or infinite", "replace them")),
    Case("bomb-png", "degrade", "images", _bomb,
         refused("big.png", "100,000 x 100,000", "178,956,970", "downscale or crop")),
    Case("rgba-warns-alpha", "degrade", "images", _rgba,
         accepted(_warned("warning", "rgba.png", "alpha channel", "dropped"))),
    Case("la-warns-alpha", "degrade", "images", _la,
         accepted(_warned("warning", "la.png", "alpha channel", mode="L"))),
    Case("palette", "degrade", "images", _palette, accepted(_written("out.png", "RGB"))),
    Case("palette-transparency", "degrade", "images", _palette_transparent,
         accepted(_warned("pal.png", "transparency", "dropped"))),
    Case("one-bit", "degrade", "images", _one_bit, accepted(_written("out.png", "L"))),
    Case("cmyk-jpeg", "degrade", "images", _cmyk, accepted(_written("out.png", "RGB"))),
    Case("empty-file", "degrade", "images", _empty_png,
         refused("zero.png", "empty (0 bytes)", "give a non-empty image")),
    Case("text-named-png", "degrade", "images", _text_png,
         refused("notes.png", "not an image", "give a PNG")),
    Case("truncated-png", "degrade", "images", _truncated,
         refused("cut.png", "truncated", "replace the file")),
    Case("folder-as-image", "degrade", "images", _folder_input,
         refused("pics", "is a folder", "give the path of one image")),
    Case("missing-image", "degrade", "images", _missing,
         refused("nowhere.png", "not found", "check the path")),
    Case("output-under-a-file", "degrade", "images", _out_under_file,
         refused("blocker", "is a file, not a folder", "choose an -o path")),
    Case("output-unknown-extension", "degrade", "images", _out_ext(".xyz"),
         refused("out.xyz", "'.xyz'", "end the -o file name with .png")),
    Case("output-no-extension", "degrade", "images", _out_ext(""),
         refused("out", "without an extension", ".png")),
    Case("output-is-a-folder", "degrade", "images", _out_is_folder,
         refused("results", "it is a folder", "-o results/degraded.png")),
    Case("output-kept-on-bad-spec", "degrade", "images", _out_kept_on_error,
         refused("sigma", "gaussian_noise", after=_old_bytes_kept)),
    Case("python-read-image-bomb", "python", "images",
         _read_image_call("big.png", lambda f: _bomb(f) and None),
         refused("big.png", "100,000 x 100,000", "downscale")),
    Case("python-read-image-16bit", "python", "images",
         _read_image_call("deep.png", lambda f: _b16(f) and None),
         accepted(_scaled_16bit)),
]  # fmt: skip


# --- files robustlab reads ---------------------------------------------------------------


def _store(kind: str) -> Callable[[Path], None]:
    """Replace the copied run's results.sqlite by a bad one."""

    def make(folder: Path) -> None:
        run = _copy_run(folder, with_cache=kind.startswith("run"))
        store = run / "results.sqlite"
        data = store.read_bytes()
        if kind.endswith("garbage"):
            store.write_bytes(b"not a database " * 300)
        elif kind.endswith("truncated"):
            store.write_bytes(data[: len(data) // 3])
        elif kind.endswith("empty"):
            store.write_bytes(b"")
        elif kind.endswith("foreign"):
            store.unlink()
            with sqlite3.connect(store) as db:
                db.execute("CREATE TABLE users (name TEXT)")
            db.close()
        elif kind.endswith("folder"):
            store.unlink()
            store.mkdir()
        for name in ("report.md", "report.html"):
            (run / name).unlink()
        _remember(folder, "results.sqlite")

    return make


def _report_with(kind: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        _store(f"report-{kind}")(folder)
        return ["report", "run"]

    return build


def _run_with(kind: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        _store(f"run-{kind}")(folder)
        return ["run", "tiny.yaml", "-o", "run", "-q", "--device", "cpu"]

    return build


def _no_report_written(folder: Path) -> None:
    _untouched(folder)
    assert not (folder / "run" / "report.md").exists(), "a refused store got a report"


_STORE_FIX = ("results.sqlite", "not a robustlab results store", "move it away")


def _run_file(name: str, content: bytes | None) -> Callable[[Path], list[str]]:
    """A run directory whose ``name`` is missing (None) or holds ``content``."""

    def build(folder: Path) -> list[str]:
        run = _copy_run(folder, with_cache=False)
        if content is None:
            (run / name).unlink()
        else:
            (run / name).write_bytes(content)
        (run / "report.md").unlink()
        return ["report", "run"]

    return build


def _report_rebuilt(name: str, content: bytes | None) -> Any:
    def verify(folder: Path, output: str) -> None:
        run = folder / "run"
        assert (run / "report.md").is_file() and "## Models" in (run / "report.md").read_text()
        if content is None:
            assert not (run / name).exists(), f"report wrote {name}"
        else:
            assert (run / name).read_bytes() == content, f"report changed {name}"

    return verify


def _safetensors_garbage(folder: Path, name: str = "model") -> Path:
    """A model pair whose .safetensors is not safetensors (a valid card beside it)."""
    (folder / f"{name}.safetensors").write_bytes(struct.pack("<Q", 40) + b'{"w": [1, 2' + b"x" * 9)
    (folder / f"{name}.json").write_text(json.dumps({"architecture": "lin2022_cnn"}))
    return folder / f"{name}.safetensors"


def _attack_garbage(folder: Path) -> list[str]:
    path = _safetensors_garbage(folder)
    return ["attack", "--model", str(path), "--data", "mnist-sample", "--attack", "fgsm:eps=0.1",
            "--out", "adv.npz", "--limit", "4", "--device", "cpu"]  # fmt: skip


def _attack_text_weights(folder: Path) -> list[str]:
    (folder / "model.safetensors").write_text("just some text, not weights")
    (folder / "model.json").write_text(json.dumps({"architecture": "lin2022_cnn"}))
    return ["attack", "--model", "model.safetensors", "--data", "mnist-sample", "--attack",
            "fgsm:eps=0.1", "--out", "adv.npz", "--limit", "4", "--device", "cpu"]  # fmt: skip


def _attack_bad_card(folder: Path) -> list[str]:
    _safetensors_garbage(folder)
    (folder / "model.json").write_bytes(b"\xff\xfe not json")
    return ["attack", "--model", "model.safetensors", "--data", "mnist-sample", "--attack",
            "fgsm:eps=0.1", "--out", "adv.npz", "--limit", "4", "--device", "cpu"]  # fmt: skip


def _load_model_garbage(folder: Path) -> Callable[[], Any]:
    from robustlab.models import load_model

    path = _safetensors_garbage(folder)
    return lambda: load_model(path)


def _factory_weights(content: bytes) -> Callable[[Path], Callable[[], Any]]:
    def build(folder: Path) -> Callable[[], Any]:
        from robustlab.models.external import load_external_model

        (folder / "nets.py").write_text(
            "import torch\n\ndef make_net():\n    return torch.nn.Linear(4, 2)\n"
        )
        (folder / "weights.safetensors").write_bytes(content)
        return lambda: load_external_model(
            factory=f"{folder / 'nets.py'}:make_net", weights=folder / "weights.safetensors"
        )

    return build


def _run_cached_garbage(folder: Path) -> list[str]:
    _copy_run(folder)
    shutil.rmtree(folder / "run")
    (cached,) = (folder / "cache").glob("*/epoch-0001.safetensors")
    cached.write_bytes(b"\x00" * 8 + b"garbage")
    return ["run", "tiny.yaml", "-o", "run", "-q", "--device", "cpu"]


def _store_call(kind: str, create: bool) -> Callable[[Path], Callable[[], Any]]:
    def build(folder: Path) -> Callable[[], Any]:
        from robustlab.study.store import ResultsStore

        _store(f"report-{kind}")(folder)
        return lambda: ResultsStore(folder / "run" / "results.sqlite", create=create)

    return build


def _build_report_call(kind: str) -> Callable[[Path], Callable[[], Any]]:
    def build(folder: Path) -> Callable[[], Any]:
        from robustlab.report.build import build_report

        _store(f"report-{kind}")(folder)
        return lambda: build_report(folder / "run")

    return build


def _run_completed(folder: Path, output: str) -> None:
    assert _cells(folder) == 2, "the run did not fill the empty store"
    assert (folder / "run" / "report.md").is_file()


FILE_CASES = [
    Case("report-store-garbage", "report", "files", _report_with("garbage"),
         refused(*_STORE_FIX, "not a SQLite database", after=_no_report_written)),
    Case("report-store-truncated", "report", "files", _report_with("truncated"),
         refused(*_STORE_FIX, "truncated", after=_no_report_written)),
    Case("report-store-empty", "report", "files", _report_with("empty"),
         refused(*_STORE_FIX, "empty (0 bytes)", after=_no_report_written)),
    Case("report-store-foreign-db", "report", "files", _report_with("foreign"),
         refused(*_STORE_FIX, "other tables (users)", after=_no_report_written)),
    Case("report-store-is-folder", "report", "files", _report_with("folder"),
         refused("results.sqlite", "is a folder", "move it away")),
    Case("report-no-store", "report", "files",
         lambda f: (f / "empty-dir").mkdir() or ["report", "empty-dir"],
         refused("empty-dir", "holds no results.sqlite", "robustlab run STUDY.yaml")),
    Case("run-store-garbage", "run", "files", _run_with("garbage"),
         refused(*_STORE_FIX, "-o OTHER_DIR", after=_untouched), env=_CACHE_ENV),
    Case("run-store-truncated", "run", "files", _run_with("truncated"),
         refused(*_STORE_FIX, "truncated", after=_untouched), env=_CACHE_ENV),
    Case("run-store-empty-is-filled", "run", "files", _run_with("empty"),
         accepted(_run_completed), env=_CACHE_ENV),
    Case("report-config-yaml-missing", "report", "files", _run_file("config.yaml", None),
         accepted(_report_rebuilt("config.yaml", None))),
    Case("report-config-yaml-damaged", "report", "files",
         _run_file("config.yaml", b"name: [unclosed\n\x00"),
         accepted(_report_rebuilt("config.yaml", b"name: [unclosed\n\x00"))),
    Case("report-models-json-missing", "report", "files", _run_file("models.json", None),
         accepted(_report_rebuilt("models.json", None))),
    Case("report-models-json-damaged", "report", "files", _run_file("models.json", b"{\"cnn"),
         accepted(_report_rebuilt("models.json", b"{\"cnn"))),
    Case("attack-model-not-safetensors", "attack", "files", _attack_garbage,
         refused("model.safetensors", "not a readable safetensors file", "replace it")),
    Case("attack-model-text-weights", "attack", "files", _attack_text_weights,
         refused("model.safetensors", "not a readable safetensors file", "delete it")),
    Case("attack-model-card-binary", "attack", "files", _attack_bad_card,
         refused("model.json", "not valid", "replace it")),
    Case("python-load-model-garbage", "python", "files", _load_model_garbage,
         refused("model.safetensors", "not a readable safetensors file", "replace it")),
    Case("python-factory-weights-garbage", "python", "files",
         _factory_weights(struct.pack("<Q", 30) + b'{"w": '),
         refused("weights.safetensors", "not a readable safetensors file", "save the weights")),
    Case("python-factory-weights-text", "python", "files",
         _factory_weights(b"PK? no, just text"),
         refused("weights.safetensors", "neither a safetensors file", "save_file")),
    Case("run-cached-weights-damaged", "run", "files", _run_cached_garbage,
         refused("epoch-0001.safetensors", "not a readable safetensors file", "delete it"),
         env=_CACHE_ENV),
    Case("python-store-garbage", "python", "files", _store_call("garbage", True),
         refused(*_STORE_FIX, "not a SQLite database")),
    Case("python-store-empty-read", "python", "files", _store_call("empty", False),
         refused(*_STORE_FIX, "empty (0 bytes)")),
    Case("python-build-report-truncated", "python", "files", _build_report_call("truncated"),
         refused(*_STORE_FIX, "truncated")),
]  # fmt: skip


# --- faults: a full disk while writing ---------------------------------------------------


class _FullDisk(io.FileIO):
    """A file that writes half of what it is given, then fails as a full disk does."""

    def write(self, data: Any) -> int:
        super().write(bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, "No space left on device")


def _disk_full_on(pattern: str) -> Callable[[], None]:
    """Make atomic writes of files whose temporary name matches ``pattern`` fail midway."""

    def install() -> None:
        import robustlab.atomic

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if re.search(pattern, Path(file).name):
                return _FullDisk(file, mode.replace("b", ""))
            return open(file, mode, *args, **kwargs)

        _PATCH["mp"].setattr(robustlab.atomic, "open", fake_open, raising=False)

    return install


_REPORT_FILES = (
    "report.md", "report.html", "results.csv", "models.json", "config.yaml",
    "report_files/accuracy.png",
)  # fmt: skip


def _faulty(command: str, pattern: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        run = _copy_run(folder)
        figures = sorted(p.name for p in (run / "report_files").glob("*.png"))
        _remember(folder, *_REPORT_FILES, *(f"report_files/{n}" for n in figures))
        (folder / "cells").write_text(str(_cells(folder)))
        _disk_full_on(pattern)()
        if command == "report":
            return ["report", "run"]
        return ["run", "tiny.yaml", "-o", "run", "-q", "--device", "cpu"]

    return build


def _nothing_lost(folder: Path) -> None:
    _untouched(folder)
    assert _cells(folder) == int((folder / "cells").read_text()), "cells were lost"


_FULL = ("disk is full", "nothing computed was lost", "run the same command again")


def _atomic_call(folder: Path) -> Callable[[], Any]:
    from robustlab.atomic import write_text_atomic

    (folder / "notes.md").write_text("old")
    _disk_full_on(r"notes")()

    def call() -> Any:
        try:
            write_text_atomic(folder / "notes.md", "new text " * 100)
        except OSError as err:
            return err
        return None

    return call


def _atomic_failed(folder: Path, err: Any) -> None:
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC, err
    assert err.filename == str(folder / "notes.md")
    assert (folder / "notes.md").read_text() == "old"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.md"]


def _sqlite_full(folder: Path) -> Callable[[], Any]:
    from robustlab.study.store import ResultsStore

    store = ResultsStore(folder / "results.sqlite")
    return lambda: store.translate(sqlite3.OperationalError("database or disk is full"))


def _is_enospc(folder: Path, err: Any) -> None:
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC, err
    assert "results.sqlite" in str(err)


def _degrade_full(folder: Path) -> list[str]:
    _save(folder, "in.png", _grey())
    (folder / "out.png").write_bytes(b"old output")

    def broken_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    _PATCH["mp"].setattr(Image.Image, "save", broken_save)
    return _degrade("in.png", "out.png", "salt_pepper:amount=0.1")


def _old_output_kept(folder: Path) -> None:
    assert (folder / "out.png").read_bytes() == b"old output"
    assert sorted(p.name for p in folder.iterdir()) == ["in.png", "out.png"]


FAULT_CASES = [
    Case("report-disk-full-md", "report", "faults", _faulty("report", r"^\.report\..*\.md$"),
         refused(*_FULL, "report.md", after=_nothing_lost)),
    Case("report-disk-full-html", "report", "faults", _faulty("report", r"^\.report\..*\.html$"),
         refused(*_FULL, "report.html", after=_nothing_lost)),
    Case("report-disk-full-figure", "report", "faults", _faulty("report", r"\.png$"),
         refused(*_FULL, "report_files", after=_nothing_lost)),
    Case("run-disk-full-csv", "run", "faults", _faulty("run", r"^\.results\."),
         refused(*_FULL, "results.csv", "finished cells are saved", after=_nothing_lost),
         env=_CACHE_ENV),
    Case("run-disk-full-models-json", "run", "faults", _faulty("run", r"^\.models\."),
         refused(*_FULL, "models.json", after=_nothing_lost), env=_CACHE_ENV),
    Case("run-disk-full-config-yaml", "run", "faults", _faulty("run", r"^\.config\."),
         refused(*_FULL, "config.yaml", after=_nothing_lost), env=_CACHE_ENV),
    Case("degrade-disk-full", "degrade", "faults", _degrade_full,
         refused("disk is full", "out.png", after=_old_output_kept)),
    Case("python-atomic-write-disk-full", "python", "faults", _atomic_call,
         accepted(_atomic_failed)),
    Case("python-store-disk-full", "python", "faults", _sqlite_full,
         accepted(_is_enospc)),
]  # fmt: skip


# --- Markdown: labels that could break report.md tables ----------------------------------


def _run_labelled(label: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        shutil.copytree(_BASE["cache"], folder / "cache")
        (folder / "tiny.yaml").write_text(STUDY.format(label=json.dumps(label)))
        return ["run", "tiny.yaml", "-o", "run", "-q", "--device", "cpu"]

    return build


def _cells_of(line: str) -> int:
    """Columns of a Markdown table row (escaped pipes do not count)."""
    return len(re.split(r"(?<!\\)\|", line.strip())) - 2


def _tables_intact(markdown: str) -> None:
    """Every row of every table has the header's number of columns."""
    columns = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        if columns is None:
            columns = _cells_of(line)
        assert _cells_of(line) == columns, (
            f"row has {_cells_of(line)} columns, not {columns}:\n{line}"
        )


def _label_safe(label: str, in_markdown: str) -> Any:
    def verify(folder: Path, output: str) -> None:
        run = folder / "run"
        markdown = (run / "report.md").read_text()
        _tables_intact(markdown)
        assert in_markdown in markdown, f"{in_markdown!r} not in report.md"
        body = (run / "report.html").read_text().split("</style>", 1)[1]
        assert "<script>" not in body
        for tag, mark in (("code", "`"), ("b", "**")):
            body = body.replace(f"<{tag}>", mark).replace(f"</{tag}>", mark)
        expected = html.escape(" ".join(label.split()))
        assert expected in " ".join(body.split()), f"{expected!r} not in report.html"

    return verify


def _document_call(cells: list[str]) -> Callable[[Path], Callable[[], Any]]:
    def build(folder: Path) -> Callable[[], Any]:
        from robustlab.report.document import Heading, Table, to_html, to_markdown

        blocks: Any = [Heading(cells[0], 2), Table(["name", "value"], [cells[:2], cells[1:3]])]
        return lambda: (to_markdown(blocks, folder / "figures"), to_html(blocks, "t"))

    return build


def _document_safe(folder: Path, value: tuple[str, str]) -> None:
    markdown, page = value
    _tables_intact(markdown)
    heading = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert len(heading) == 1 and "\n" not in heading[0]
    assert "<script>" not in page.split("</style>", 1)[1]


MARKDOWN_CASES = [
    Case("label-with-pipe", "run", "markdown", _run_labelled("salt | pepper"),
         accepted(_label_safe("salt | pepper", "salt \\| pepper")), env=_CACHE_ENV),
    Case("label-with-newline", "run", "markdown", _run_labelled("salt\nand pepper"),
         accepted(_label_safe("salt and pepper", "salt and pepper")), env=_CACHE_ENV),
    Case("label-with-backticks", "run", "markdown", _run_labelled("`sp` | x"),
         accepted(_label_safe("`sp` | x", "`sp` \\| x")), env=_CACHE_ENV),
    Case("label-with-script", "run", "markdown", _run_labelled("<script>alert(1)</script>"),
         accepted(_label_safe("<script>alert(1)</script>", "alert(1)")), env=_CACHE_ENV),
    Case("label-leading-hash", "run", "markdown", _run_labelled("# not a heading"),
         accepted(_label_safe("# not a heading", "| # not a heading |")), env=_CACHE_ENV),
    Case("label-with-stars", "run", "markdown", _run_labelled("*bold* | **x**"),
         accepted(_label_safe("*bold* | **x**", "*bold* \\| **x**")), env=_CACHE_ENV),
    Case("python-table-pipes-newlines", "python", "markdown",
         _document_call(["a|b\nc", "x || y", "1\r\n2|"]), accepted(_document_safe)),
    Case("python-table-script-hash", "python", "markdown",
         _document_call(["<script>x</script>", "# h", "`|`"]), accepted(_document_safe)),
]  # fmt: skip


CASES: list[Case] = IMAGE_CASES + FILE_CASES + FAULT_CASES + MARKDOWN_CASES


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _PATCH["mp"] = monkeypatch
    try:
        check(case, tmp_path, monkeypatch)
    finally:
        _PATCH.clear()


def test_the_table_covers_every_class_and_entry() -> None:
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"images", "files", "faults", "markdown"}
    assert {c.entry for c in CASES} >= {"degrade", "report", "run", "attack", "python"}
