"""Bad input, part study files: YAML, values that validate but cannot run, paths, concurrency.

Each case builds its input in a fresh folder and says what must happen (see ``bad_input``).
Every refusal here comes before any data is read or model trained: the cases run in
milliseconds, except the few that load the embedded sample or train one tiny model.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import robustlab
from bad_input import Case, accepted, check, ids, refused
from robustlab.spec import parse_spec
from robustlab.study.config import load_config, load_configs
from robustlab.study.runner import run_study
from robustlab.study.store import ResultsStore

TINY = """\
name: tiny
dataset: {name: mnist-sample, test_limit: 20, train_limit: 100}
models:
  - {name: cnn, architecture: lin2022_cnn, epochs: [1]}
"""


def study(extra: str = "", head: str = TINY, name: str = "study.yaml") -> Callable[[Path], Any]:
    """A case input: a study file (the tiny study plus ``extra`` YAML), run with ``run``."""

    def build(folder: Path) -> list[str]:
        (folder / name).write_text(head + textwrap.dedent(extra))
        return ["run", name, "-q"]

    return build


def raw(data: bytes, args: tuple[str, ...] = ()) -> Callable[[Path], Any]:
    """A case input: a study file of exactly these bytes."""

    def build(folder: Path) -> list[str]:
        (folder / "study.yaml").write_bytes(data)
        return ["run", "study.yaml", "-q", *args]

    return build


def with_output(prepare: Callable[[Path], Path]) -> Callable[[Path], Any]:
    """A case input: the tiny study run with ``-o`` a path ``prepare`` makes."""

    def build(folder: Path) -> list[str]:
        (folder / "study.yaml").write_text(TINY)
        return ["run", "study.yaml", "-q", "-o", str(prepare(folder))]

    return build


def python(call: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """A case input: a Python call in the case's folder."""
    return lambda folder: lambda: call(folder)


def loaded(extra: str) -> Callable[[Path], Any]:
    """A Python case: load the tiny study plus ``extra`` and return the configuration."""

    def call(folder: Path) -> Any:
        (folder / "study.yaml").write_text(TINY + textwrap.dedent(extra))
        return load_config(folder / "study.yaml")

    return python(call)


def params_are(expected: dict[str, Any], part: str = "degradations") -> Any:
    def verify(folder: Path, config: Any) -> None:
        entry = getattr(config, part)[0]
        assert {**entry.params, **entry.grid} == expected, entry

    return verify


def image(folder: Path) -> str:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "in.png")
    return "in.png"


def degrade(*specs: str) -> Callable[[Path], Any]:
    def build(folder: Path) -> list[str]:
        args = ["degrade", image(folder), "-o", "out.png"]
        for spec in specs:
            args += ["-d", spec]
        return args

    return build


def other_study(folder: Path) -> Path:
    store = ResultsStore(folder / "theirs" / "results.sqlite")
    store.set_meta("config", {"name": "someone-else"})
    store.close()
    return folder / "theirs"


def untouched(*names: str) -> Callable[[Path], None]:
    def after(folder: Path) -> None:
        for name in names:
            assert (folder / name).read_text() == "precious", f"{name} was overwritten"
        assert not (folder / "results.sqlite").exists()

    return after


def nothing_written(folder: Path) -> None:
    assert not list(folder.rglob("results.sqlite")), "a refused study created a results store"


def cells_once(folder: Path, output: str) -> None:
    store = ResultsStore(folder / "runs" / "tiny" / "results.sqlite")
    try:
        assert len(store.finished_keys()) == 1
    finally:
        store.close()


def stale_lock(folder: Path) -> list[str]:
    """A lock file left by a killed run (its holder is gone, so the lock is free)."""
    (folder / "runs" / "tiny").mkdir(parents=True)
    (folder / "runs" / "tiny" / ".robustlab.lock").write_text(str(os.getpid() + 10**6))
    return list(study()(folder))


def after_a_first_run(folder: Path) -> list[str]:
    """The tiny study, already run once to the end."""
    args = list(study()(folder))
    run_study(folder / "study.yaml")
    return args


NET = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
DATA = (torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))


class NanNet(torch.nn.Module):
    """A classifier whose logits are NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 3), float("nan"))


DUPLICATE_DEGRADATIONS = """\
degradations:
  - gaussian_noise:sigma=0.1
defenses: [none]
degradations:
  - salt_pepper:amount=0.1
"""

CASES: list[Case] = [
    # --- YAML: how the file is read -----------------------------------------------------------
    Case("yaml-duplicate-top-level-key", "run", "yaml", study(DUPLICATE_DEGRADATIONS),
         refused("duplicate key 'degradations'", "line 8", "first given at line 5", "merge",
                 after=nothing_written)),
    Case("yaml-duplicate-key-in-a-model", "run", "yaml",
         study(head=TINY.replace("epochs: [1]}", "epochs: [1], epochs: [2]}")),
         refused("duplicate key 'epochs'", "line 4", "study.yaml")),
    Case("yaml-duplicate-key-in-params", "run", "yaml",
         study("degradations:\n  - name: blur\n    params: {sigma: 1, sigma: 2}\n"),
         refused("duplicate key 'sigma'", "line 7")),
    Case("yaml-not-utf8", "run", "yaml", raw(TINY.encode() + b"description: caf\xe9\n"),
         refused("not UTF-8", "line 5", "0xe9", "save the file as UTF-8")),
    Case("yaml-utf8-bom-accepted", "python", "yaml",
         python(lambda f: (f / "s.yaml").write_bytes(b"\xef\xbb\xbf" + TINY.encode())
                or load_config(f / "s.yaml")),
         accepted(lambda f, c: None)),
    Case("yaml-binary-garbage", "run", "yaml", raw(bytes(range(256)) * 4),
         refused("study.yaml", "not UTF-8")),
    Case("yaml-base-as-list", "run", "yaml",
         study("---\nname: second\nbase: [tiny]\n"),
         refused("base (line 7)", "is a list", "names one earlier study")),
    Case("yaml-base-unknown", "run", "yaml",
         study("---\nname: second\nbase: tinny\n"),
         refused("base 'tinny' (line 7)", "not an earlier study", "earlier: tiny")),
    Case("yaml-bad-indentation", "run", "yaml", study("seed: 1\n  trials: 2\n"),
         refused("malformed YAML", "line 6", "study.yaml")),
    Case("yaml-tab-indentation", "run", "yaml", study("degradations:\n\t- gaussian_blur\n"),
         refused("malformed YAML", "line 6", "'\\t'")),
    Case("yaml-unclosed-bracket", "run", "yaml", study("defenses: [none, median\n"),
         refused("malformed YAML", "study.yaml")),
    Case("yaml-empty-file", "run", "yaml", raw(b""), refused("holds no study")),
    Case("yaml-only-comments", "run", "yaml", raw(b"# nothing here\n"), refused("holds no study")),
    Case("yaml-top-level-list", "run", "yaml", raw(b"- name: tiny\n"),
         refused("must be a YAML mapping", "list")),
    Case("yaml-top-level-scalar", "run", "yaml", raw(b"quickstart\n"),
         refused("must be a YAML mapping", "str")),
    Case("yaml-unknown-key-names-the-line", "run", "yaml", study("degradation: [blur]\n"),
         refused("degradation (line 5)", "extra inputs are not permitted")),
    Case("yaml-wrong-type-names-the-line", "run", "yaml", study("trials: many\n"),
         refused("trials (line 5)", "valid integer")),
    Case("yaml-nested-error-names-the-line", "run", "yaml",
         study("attacks:\n  - name: pgd\n    params: {eps: 0.1}\n    protocols: [sideways]\n"),
         refused("attacks[0].protocols[0] (line 8)", "oblivious")),
    Case("yaml-duplicate-study-names", "run", "yaml", study("---\n" + TINY),
         refused("distinct names", "tiny")),
    Case("yaml-exponent-is-a-float", "python", "yaml",
         loaded("degradations:\n  - name: gaussian_noise\n    params: {sigma: 1e-1}\n"),
         accepted(params_are({"sigma": 0.1}))),
    Case("yaml-exponent-key-equals-decimal", "python", "yaml",
         python(lambda f: [
             (f / "a.yaml").write_text(TINY + "degradations: [gaussian_noise:sigma=1e-1]\n"),
             (f / "b.yaml").write_text(TINY + "degradations: [gaussian_noise:sigma=0.1]\n"),
         ] and load_config(f / "a.yaml") == load_config(f / "b.yaml")),
         accepted(lambda f, same: None if same else pytest.fail("1e-1 and 0.1 differ"))),
    Case("yaml-fraction-eps", "python", "yaml",
         loaded("attacks:\n  - name: pgd\n    grid: {eps: [8/255, 16/255]}\n"),
         accepted(params_are({"eps": [8 / 255, 16 / 255]}, "attacks"))),
    Case("yaml-fraction-in-a-spec", "python", "yaml",
         loaded("attacks: [fgsm:eps=8/255]\n"),
         accepted(params_are({"eps": 8 / 255}, "attacks"))),
    Case("yaml-fraction-by-zero", "run", "yaml", study("attacks: [fgsm:eps=8/0]\n"),
         refused("divides by zero", "8/0")),
    Case("yaml-fraction-by-zero-in-yaml", "run", "yaml",
         study("attacks:\n  - name: pgd\n    grid: {eps: [8/0]}\n"),
         refused("divides by zero", "line 7")),
    Case("yaml-quoted-fraction-stays-text", "python", "yaml",
         loaded("degradations:\n  - {name: gaussian_blur, label: '8/255'}\n"),
         accepted(lambda f, c: None if c.degradations[0].label == "8/255" else pytest.fail())),
    Case("yaml-study-file-is-a-folder", "run", "paths",
         lambda f: (f / "dir.yaml").mkdir() or ["run", "dir.yaml"],
         refused("dir.yaml", "is a folder", "name a .yaml file")),
    Case("yaml-study-file-missing", "run", "paths", lambda f: ["run", "nope/missing.yaml"],
         refused("missing.yaml", "not found")),
    # --- specs on the command line ------------------------------------------------------------
    Case("spec-unclosed-list", "degrade", "yaml", degrade("salt_pepper:amount=[0.1"),
         refused("salt_pepper:amount=[0.1", "closing ] is missing")),
    Case("spec-unbalanced-bracket", "degrade", "yaml", degrade("salt_pepper:amount=0.1]"),
         refused("unbalanced ']'", "salt_pepper")),
    Case("spec-bad-yaml-value", "degrade", "yaml", degrade("gaussian_noise:sigma={a"),
         refused("sigma", "gaussian_noise")),
    Case("spec-key-twice", "degrade", "yaml", degrade("gaussian_noise:sigma=0.1,sigma=0.2"),
         refused("'sigma' is given twice", "keep one")),
    Case("spec-empty-value", "degrade", "yaml", degrade("gaussian_noise:sigma="),
         refused("'sigma'", "has no value", "sigma=<value>")),
    Case("spec-infinite-value", "degrade", "values", degrade("gaussian_noise:sigma=.inf"),
         refused("not a finite number", "sigma")),
    Case("spec-compose-two-steps", "degrade", "yaml",
         degrade("compose:steps=[gaussian_noise:sigma=0.1, salt_pepper:amount=0.1]"),
         accepted(lambda f, out: None if (f / "out.png").is_file() else pytest.fail(out))),
    Case("spec-compose-quoted-step-with-two-params", "degrade", "yaml",
         degrade('compose:steps=["gaussian_noise:sigma=0.1,clip=true", jpeg:quality=50]'),
         accepted(lambda f, out: None if (f / "out.png").is_file() else pytest.fail(out))),
    Case("spec-fraction-in-a-cli-spec", "python", "yaml",
         python(lambda f: parse_spec("pgd:eps=8/255")),
         accepted(lambda f, v: None if v == ("pgd", {"eps": 8 / 255}) else pytest.fail(str(v)))),
    Case("spec-not-a-string", "python", "python-api", python(lambda f: parse_spec(3)),  # type: ignore[arg-type]
         refused("a spec is a string", "int")),
    # --- values that validate but cannot run --------------------------------------------------
    Case("value-infinite-sigma", "run", "values",
         study("degradations:\n  - name: gaussian_noise\n    params: {sigma: .inf}\n"),
         refused("degradations[0].params.sigma (line 7)", "not a finite number",
                 "write a finite value", after=nothing_written)),
    Case("value-nan-in-a-grid", "run", "values",
         study("degradations:\n  - name: gaussian_noise\n    grid: {sigma: [0.1, .nan]}\n"),
         refused("degradations[0].grid.sigma[1]", "not a finite number")),
    Case("value-infinite-learning-rate", "run", "values",
         study(head=TINY.replace("epochs: [1]}", "epochs: [1], learning_rate: .inf}")),
         refused("learning_rate", "not a finite number")),
    Case("value-huge-trials", "run", "values", study("trials: 1e15\n"),
         refused("trials (line 5)", "larger than any parameter")),
    Case("value-too-many-trials", "run", "values", study("trials: 5000\n"),
         refused("trials (line 5)", "less than or equal to 1000")),
    Case("value-huge-copies", "run", "values", study("copies: 1e9\n"),
         refused("copies (line 5)", "less than or equal to 100000")),
    Case("value-zero-trials", "run", "values", study("trials: 0\n"),
         refused("trials", "greater than or equal to 1")),
    Case("value-fractional-trials", "run", "values", study("trials: 2.5\n"),
         refused("trials", "fractional part")),
    Case("value-even-median", "run", "values", study("defenses: [none, median:size=4]\n"),
         refused("defenses[1]", "median", "odd", after=nothing_written)),
    Case("value-median-larger-than-the-image", "run", "values",
         study("defenses: [none, median:size=57]\n"),
         refused("defense 'median' (size=57)", "1x28x28", "at most 55", after=nothing_written)),
    Case("value-too-many-stuck-pixels", "run", "values",
         study("degradations:\n  - name: stuck_pixels\n    grid: {count: [10, 5000]}\n"),
         refused("degradation 'stuck_pixels' (count=5000)", "1x28x28", after=nothing_written)),
    Case("value-salt-pepper-above-one", "run", "values",
         study("degradations: [salt_pepper:amount=1.5]\n"), refused("amount", "salt_pepper")),
    Case("value-negative-eps", "run", "values", study("attacks: [fgsm:eps=-0.1]\n"),
         refused("eps", ">= 0")),
    Case("value-zero-epochs", "run", "values",
         study(head=TINY.replace("epochs: [1]", "epochs: [0]")), refused("epochs", ">= 1")),
    Case("value-zero-test-limit", "run", "values",
         study(head=TINY.replace("test_limit: 20", "test_limit: 0")),
         refused("dataset.test_limit (line 2)", "greater than or equal to 1")),
    Case("value-negative-batch-size", "run", "values", study("batch_size: -5\n"),
         refused("batch_size (line 5)", "greater than or equal to 1")),
    Case("value-text-sigma", "run", "values",
         study("degradations: [gaussian_noise:sigma=abc]\n"), refused("sigma", "number")),
    # --- paths --------------------------------------------------------------------------------
    Case("path-study-named-dotdot", "run", "paths",
         study(head=TINY.replace("name: tiny", "name: '..'")),
         refused("dots only", "'..'", "use letters", after=nothing_written)),
    Case("path-study-named-dot", "run", "paths",
         study(head=TINY.replace("name: tiny", "name: '.'")), refused("dots only")),
    Case("path-study-name-with-a-slash", "run", "paths",
         study(head=TINY.replace("name: tiny", "name: a/b")),
         refused("name (line 1)", "'a/b'", "use only letters", "e.g. mnist-noise")),
    Case("path-output-is-a-file", "run", "paths",
         with_output(lambda f: (f / "taken.txt").write_text("precious") and f / "taken.txt"),
         refused("taken.txt", "is a file, not a folder", "-o DIR", after=untouched("taken.txt"))),
    Case("path-output-is-the-current-folder", "run", "paths",
         with_output(lambda f: (f / "notes.md").write_text("precious") and Path(".")),
         refused("holds other files", "notes.md", "could overwrite them",
                 after=untouched("notes.md"))),
    Case("path-output-is-another-studys-run", "run", "paths", with_output(other_study),
         refused("holds the results of study 'someone-else'", "not 'tiny'", "-o DIR")),
    Case("path-output-under-a-file", "run", "paths",
         with_output(lambda f: (f / "file").write_text("precious") and f / "file" / "run"),
         refused("cannot write run directory", "file/run", after=untouched("file"))),
    Case("path-output-read-only-place", "run", "paths",
         with_output(lambda f: Path("/proc/1/robustlab-run")),
         refused("cannot write run directory", "/proc/1/robustlab-run")),
    Case("path-output-in-yaml-is-a-file", "run", "paths",
         lambda f: (f / "out").write_text("precious")
         and (f / "s.yaml").write_text(TINY + "output: out\n") and ["run", "s.yaml", "-q"],
         refused("run directory out", "is a file", after=untouched("out"))),
    Case("path-cache-is-a-file", "run", "paths",
         lambda f: (f / "cachefile").write_text("precious") and study()(f),
         refused("model cache", "cachefile", "is a file", "ROBUSTLAB_CACHE",
                 after=untouched("cachefile")),
         env={"ROBUSTLAB_CACHE": "{folder}/cachefile"}),
    Case("path-cache-read-only", "run", "paths", study(),
         refused("cannot write model cache", "ROBUSTLAB_CACHE", "writable folder"),
         env={"ROBUSTLAB_CACHE": "/proc/1/robustlab-cache"}),
    Case("path-run-dir-of-the-same-study-reused", "python", "paths",
         python(lambda f: other_study(f) and run_study(
             {"name": "someone-else", "dataset": {"name": "mnist-sample", "test_limit": 10,
              "train_limit": 50}, "models": [{"name": "cnn", "architecture": "lin2022_cnn",
              "epochs": [1]}]}, run_dir=f / "theirs")),
         accepted(lambda f, result: None if result.cells_total == 1 else pytest.fail())),
    # --- the Python API -------------------------------------------------------------------------
    Case("python-run-study-bad-dict", "python", "python-api",
         python(lambda f: run_study({"name": "x", "models": []})),
         refused("study given as a dict", "dataset", "models")),
    Case("python-run-study-int", "python", "python-api", python(lambda f: run_study(123)),  # type: ignore[arg-type]
         refused("a study is a StudyConfig", "int")),
    Case("python-run-study-missing-file", "python", "python-api",
         python(lambda f: run_study("nothere.yaml")), refused("nothere.yaml", "not found")),
    Case("python-load-configs-not-utf8", "python", "python-api",
         python(lambda f: (f / "s.yaml").write_bytes(b"name: \xff\n") and load_configs(f / "s.yaml")),
         refused("not UTF-8", "line 1")),
    Case("python-run-study-dict-infinite", "python", "python-api",
         python(lambda f: run_study({**json.loads(json.dumps({
             "name": "x", "dataset": {"name": "mnist-sample"},
             "models": [{"name": "m", "architecture": "lin2022_cnn"}]})),
             "degradations": [{"name": "gaussian_noise", "params": {"sigma": float("inf")}}]})),
         refused("degradations[0].params.sigma", "not a finite number")),
    Case("python-none-as-a-name", "python", "python-api",
         python(lambda f: robustlab.create_degradation(None)),  # type: ignore[arg-type]
         refused("a degradation is named by a string", "NoneType", "valid: compose")),
    Case("python-dataset-name-not-a-string", "python", "python-api",
         python(lambda f: robustlab.load_dataset(5)),  # type: ignore[arg-type]
         refused("a dataset is named by a string", "int")),
    Case("python-infinite-noise", "python", "python-api",
         python(lambda f: robustlab.create_degradation("gaussian_noise", sigma=float("inf"))),
         refused("sigma must be >= 0, got inf", "finite number")),
    Case("python-infinite-gaussian-filter", "python", "python-api",
         python(lambda f: robustlab.create_defense("gaussian", sigma=float("inf"))),
         refused("gaussian filter sigma", "at most", "e.g. sigma=1")),
    Case("python-huge-blur", "python", "python-api",
         python(lambda f: robustlab.create_degradation("gaussian_blur", sigma=1e308)),
         refused("sigma must be a finite number > 0 pixels", "at most 1e+08", "e.g. sigma=1")),
    Case("python-jpeg-defence-on-0-255", "python", "python-api",
         python(lambda f: robustlab.create_defense("jpeg")(torch.rand(2, 1, 8, 8) * 255)),
         refused("defence 'jpeg'", "divide 0-255 images by 255")),
    Case("python-median-on-noisy-copies", "python", "python-api",
         python(lambda f: robustlab.create_defense("median")(
             torch.rand(2, 1, 8, 8) + torch.randn(2, 1, 8, 8))),
         accepted(lambda f, y: None if y.shape == (2, 1, 8, 8) else pytest.fail())),
    Case("python-degradation-without-generator", "python", "python-api",
         python(lambda f: robustlab.create_degradation("salt_pepper")(torch.rand(1, 1, 4, 4))),
         refused("needs a torch.Generator", "manual_seed(0)")),
    Case("value-huge-sigma", "run", "values",
         study("degradations:\n  - name: gaussian_noise\n    grid: {sigma: [1e308]}\n"),
         refused("degradations[0].grid.sigma[0] (line 7)", "larger than any parameter",
                 after=nothing_written)),
    Case("spec-huge-blur", "degrade", "values", degrade("gaussian_blur:sigma=1e308"),
         refused("-d gaussian_blur:sigma=1e308", "larger than any parameter")),
    Case("evaluate-name-dotdot-writes-nothing", "python", "paths",
         python(lambda f: robustlab.evaluate(NET, data=DATA, name="..")),
         refused("dots only", after=lambda f: None if not (f / "inputs").exists()
                 and not (f.parent / "inputs").exists() else pytest.fail("inputs written"))),
    Case("evaluate-images-zero", "python", "values",
         python(lambda f: robustlab.evaluate(NET, data=DATA, images=0, run_dir=f / "r")),
         refused("test_limit", "greater than or equal to 1")),
    Case("evaluate-normalize-channels", "python", "python-api",
         python(lambda f: robustlab.evaluate(
             NET, data=DATA, normalize=([0.1, 0.2, 0.3], [0.3] * 3), run_dir=f / "r")),
         refused("normalize gives 3 mean values", "1 channel")),
    Case("evaluate-normalize-zero-std", "python", "python-api",
         python(lambda f: robustlab.evaluate(
             NET, data=DATA, normalize=([0.1], [0.0]), run_dir=f / "r")),
         refused("std must be a finite number > 0")),
    Case("evaluate-nan-logits", "python", "messages",
         python(lambda f: robustlab.evaluate(NanNet(), data=DATA, run_dir=f / "r")),
         refused("NaN or infinite logits", "weights")),
    Case("yaml-utf16-file", "run", "yaml", raw("name: tiny\n".encode("utf-16")),
         refused("UTF-16 text", "save the file as UTF-8", "iconv -f utf-16")),
    Case("spec-fraction-by-zero-says-the-fix", "degrade", "values",
         degrade("gaussian_noise:sigma=1/0"),
         refused("divides by zero", "nonzero denominator")),
    Case("value-attack-labels-repeat", "run", "values",
         study("attacks: [fgsm:eps=0.1, fgsm:eps=0.2]\n"),
         refused("attack labels must be unique", "['fgsm']", "label:")),
    # --- the other entry points -----------------------------------------------------------------
    Case("list-singular-kind", "list", "messages", lambda f: ["list", "attack"],
         refused("'attack'", "attacks")),
    Case("report-missing-folder", "report", "paths", lambda f: ["report", "no-such-run"],
         refused("no-such-run")),
    Case("run-unknown-study-name", "run", "messages", lambda f: [*study()(f), "-s", "tiyn"],
         refused("no study named tiyn", "its studies: tiny")),
    # --- concurrency ----------------------------------------------------------------------------
    Case("concurrency-stale-lock-file", "run", "concurrency", stale_lock,
         accepted(cells_once), env={"ROBUSTLAB_CACHE": "{folder}/cache"}),
    Case("concurrency-rerun-computes-nothing", "run", "concurrency", after_a_first_run,
         accepted(lambda f, out: None if "0 cells computed" in out else pytest.fail(out)),
         env={"ROBUSTLAB_CACHE": "{folder}/cache"}),
]  # fmt: skip


def test_table_covers_its_classes_and_entries() -> None:
    assert len(CASES) >= 60 and len(set(ids(CASES))) == len(CASES)
    assert {c.kind for c in CASES} >= {"yaml", "values", "paths", "concurrency", "python-api"}
    assert {c.entry for c in CASES} >= {"run", "degrade", "python", "list", "report"}


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check(case, tmp_path, monkeypatch)


def test_a_store_cut_short_by_a_full_disk_is_resumed_from_its_write_ahead_log(
    tmp_path: Path,
) -> None:
    """A checkpoint stopped by a full disk leaves the file shorter than its header says while
    the pages are still in the log: the rerun must read it, not refuse it as truncated."""
    from robustlab.errors import RobustlabError

    store = ResultsStore(tmp_path / "results.sqlite")
    store.set_meta("config", {"name": "tiny", "padding": "x" * 50_000})
    store.close()
    path = tmp_path / "results.sqlite"
    with path.open("r+b") as f:  # the file as the interrupted checkpoint left it
        f.truncate(4096)
    with pytest.raises(RobustlabError, match="truncated"):
        ResultsStore(path, create=False)
    (tmp_path / "results.sqlite-wal").write_bytes(b"\0" * 32)  # the log holding the pages
    from robustlab.study.store import _check_file

    _check_file(path, create=False)  # no longer refused: SQLite reads the pages from the log
