"""Checking where a study writes before any work starts: its run directory and the model cache.

A run directory holds one study's ``results.sqlite``, tables and report. :func:`check_run_dir`
refuses, with the path and the fix, a target that is a file, that cannot be created or written,
that is a folder of other files (``-o .`` in a project folder, or a study named so that its run
directory is one: results and report would land among them and could overwrite them), or that
holds another study's results (a second study would mix its cells into the first's report).
:func:`check_writable_folder` does the same for the model cache (``$ROBUSTLAB_CACHE``).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> check_run_dir(folder / "runs" / "quickstart", "quickstart")
    >>> (folder / "notes.txt").write_text("mine")
    4
    >>> check_run_dir(folder, "quickstart")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robustlab.errors.ConfigError: run directory ... holds other files (notes.txt, runs)...

"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from pathlib import Path

from robustlab.errors import ConfigError
from robustlab.study.certify_runner import CSV_NAME as CERTIFY_CSV
from robustlab.study.minimal_noise_runner import CSV_NAME as MINIMAL_NOISE_CSV
from robustlab.study.minimal_noise_runner import FOLDER as MINIMAL_NOISE_FOLDER

#: Files a run directory may hold: what a run writes, and the lock and SQLite side files.
RUN_FILES = frozenset(
    {
        "results.sqlite",
        "results.sqlite-wal",
        "results.sqlite-shm",
        "results.sqlite-journal",
        "results.csv",
        "models.json",
        "config.yaml",
        "report.md",
        "report.html",
        "report_files",
        ".robustlab.lock",
        "inputs",  # the model and data robustlab.evaluate was given
        CERTIFY_CSV,  # the certify part's per-image radii
        MINIMAL_NOISE_CSV,  # the minimal-noise part's per-image results
        MINIMAL_NOISE_FOLDER,  # and its noise arrays
    }
)
_SHOWN = 3


def _ours(name: str) -> bool:
    # Hidden names are the lock and the temporary files of writes in flight (atomic writes,
    # another run's write test); "*.tmp" is left by a write a kill interrupted.
    return name in RUN_FILES or name.startswith(".") or name.endswith(".tmp")


def stored_study_name(store: Path) -> str | None:
    """The name of the study whose results ``store`` holds (None if unknown or unreadable)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    except sqlite3.Error:
        return None  # a damaged store is refused, with its own message, when it is opened
    if row is None:
        return None
    try:
        name = json.loads(row[0]).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def check_writable_folder(folder: Path, what: str, fix: str) -> None:
    """Create ``folder`` if needed and check that files can be written in it.

    Raises:
        ConfigError: naming ``what``, the folder, the reason and ``fix``.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file, not a folder; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".robustlab-write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"cannot write {what} {folder}: {reason}; {fix}") from None


def check_run_dir(target: Path, study: str) -> None:
    """Refuse a run directory that cannot or must not receive ``study``'s results.

    Raises:
        ConfigError: if ``target`` is a file, is not writable, holds files a run does not write,
            or holds another study's results; the message names the path and the fix.
    """
    fix = "give another folder with -o DIR (or the study's output:)"
    if target.is_dir():
        foreign = sorted(p.name for p in target.iterdir() if not _ours(p.name))
        if foreign:
            shown = ", ".join(foreign[:_SHOWN]) + (", ..." if len(foreign) > _SHOWN else "")
            raise ConfigError(
                f"run directory {target} (resolved to {target.resolve()}) holds other files "
                f"({shown}); a run writes results.csv, report.html and more there and could "
                f"overwrite them; {fix}, a new or empty one"
            )
        store = target / "results.sqlite"
        owner = stored_study_name(store) if store.is_file() else None
        if owner is not None and owner != study:
            raise ConfigError(
                f"run directory {target} holds the results of study '{owner}', not '{study}'; "
                f"mixing them would corrupt both reports; {fix}, or delete {target} to start over"
            )
    check_writable_folder(target, "run directory", fix)
