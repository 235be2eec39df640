"""The harness of the bad-input suite: a case is an input, the entry point and the outcome.

Each ``test_bad_inputs_*.py`` module holds a table (a list of :class:`Case`) and hands it to
:func:`check`. A case builds its input in a fresh folder (the current directory while it runs)
and names what must happen:

* ``refused(...)``: the entry point ends with a clear error. For the CLI: exit code 2 (or
  ``code``), no traceback, every fragment in the output (case-insensitive). For the Python API:
  a :class:`robustlab.errors.RobustlabError` whose message holds every fragment. A raw
  ``TypeError``, ``ValueError``, ``OSError``... fails the case: that is a traceback to a user.
* ``accepted(...)``: the entry point succeeds (exit code 0 / returns) and the optional
  ``verify`` sees the right result on disk or in the returned value.

``after`` (for both) checks what must hold afterwards, e.g. that nothing computed was lost.

Example:
    >>> case = Case("list-ok", "list", "messages", lambda d: ["list"], accepted())
    >>> case.entry, case.expect.error
    ('list', False)
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from typer.testing import CliRunner

from robustlab.errors import RobustlabError

Entry = Literal["run", "degrade", "attack", "report", "list", "certify", "python"]
Kind = Literal[
    "paths",
    "values",
    "yaml",
    "images",
    "files",
    "faults",
    "concurrency",
    "python-api",
    "messages",
    "markdown",
]

#: Every entry point and every class of failure the suite must cover.
ENTRIES: tuple[str, ...] = ("run", "degrade", "attack", "report", "list", "certify", "python")
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Expect:
    """What must happen: an error holding ``fragments``, or success checked by ``verify``."""

    error: bool
    fragments: tuple[str, ...] = ()
    code: int = 2
    verify: Callable[[Path, Any], None] | None = None
    after: Callable[[Path], None] | None = None


def refused(*fragments: str, code: int = 2, after: Callable[[Path], None] | None = None) -> Expect:
    """A clear error whose message holds every fragment (case-insensitive)."""
    return Expect(True, tuple(fragments), code, None, after)


def accepted(
    verify: Callable[[Path, Any], None] | None = None, after: Callable[[Path], None] | None = None
) -> Expect:
    """Success; ``verify(folder, output)`` checks the result (CLI output text or return value)."""
    return Expect(False, (), 0, verify, after)


@dataclass(frozen=True)
class Case:
    """One bad (or borderline) input.

    ``build(folder)`` prepares files in ``folder`` and returns the CLI arguments (a list of
    strings) for a CLI entry, or a callable for ``python``.
    """

    id: str
    entry: Entry
    kind: Kind
    build: Callable[[Path], Any]
    expect: Expect
    env: dict[str, str] = field(default_factory=dict)


runner = CliRunner()


def _lower(text: str) -> str:
    return " ".join(text.lower().split())


def _missing(message: str, fragments: Sequence[str]) -> list[str]:
    flat = _lower(message)
    return [f for f in fragments if _lower(f) not in flat]


def check(case: Case, folder: Path, monkeypatch: Any) -> None:
    """Run ``case`` in ``folder`` and assert its outcome (no traceback, right message)."""
    from robustlab.cli import app

    monkeypatch.chdir(folder)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(folder=folder))
    made = case.build(folder)
    if case.entry == "python":
        _check_python(case, folder, made)
    else:
        result = runner.invoke(app, [str(a) for a in made])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(result.exception))
            raise AssertionError(f"{case.id}: traceback instead of a message:\n{trace}")
        output = result.output
        if case.expect.error:
            assert result.exit_code == case.expect.code, (
                f"{case.id}: exit code {result.exit_code}, expected {case.expect.code}:\n{output}"
            )
            missing = _missing(output, case.expect.fragments)
            assert not missing, f"{case.id}: message lacks {missing}:\n{output}"
        else:
            assert result.exit_code == 0, f"{case.id}: refused:\n{output}"
            if case.expect.verify is not None:
                case.expect.verify(folder, output)
    if case.expect.after is not None:
        case.expect.after(folder)


def _check_python(case: Case, folder: Path, call: Callable[[], Any]) -> None:
    try:
        value = call()
    except RobustlabError as err:
        if not case.expect.error:
            raise AssertionError(f"{case.id}: refused: {err}") from err
        missing = _missing(str(err), case.expect.fragments)
        assert not missing, f"{case.id}: message lacks {missing}: {err}"
        return
    except Exception as err:
        raise AssertionError(
            f"{case.id}: raw {type(err).__name__} instead of a RobustlabError: {err}"
        ) from err
    assert not case.expect.error, f"{case.id}: accepted, expected an error; returned {value!r}"
    if case.expect.verify is not None:
        case.expect.verify(folder, value)


def ids(cases: Sequence[Case]) -> list[str]:
    """The pytest ids of a table."""
    return [c.id for c in cases]
