"""The results store: one SQLite file per run directory, one row per finished cell.

Rows are committed as soon as their group finishes, so a run killed at any moment loses at
most the group in flight, and a rerun asks :meth:`ResultsStore.finished_keys` what to skip. The
report is a pure function of this file.

Example:
    >>> import tempfile
    >>> store = ResultsStore(tempfile.mkdtemp() + "/results.sqlite")
    >>> store.set_meta("config", {"name": "demo"})
    >>> store.get_meta("config")
    {'name': 'demo'}
    >>> store.finished_keys()
    set()
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from robustlab.errors import RobustlabError

STORE_NAME = "results.sqlite"  # the store's file name inside a run directory
SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY, path TEXT NOT NULL, card TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    defense TEXT NOT NULL,
    protocol TEXT NOT NULL,
    setting TEXT NOT NULL,
    setting_name TEXT NOT NULL,
    params TEXT NOT NULL,
    severity_name TEXT,
    severity REAL,
    trial INTEGER NOT NULL,
    n INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    metrics TEXT NOT NULL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, npz BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS examples (
    setting TEXT NOT NULL,
    defense TEXT NOT NULL,
    images BLOB NOT NULL,
    shape TEXT NOT NULL,
    labels TEXT NOT NULL,
    PRIMARY KEY (setting, defense)
);
"""
_COLUMNS = (
    "key, kind, model, defense, protocol, setting, setting_name, params, severity_name, "
    "severity, trial, n, errors, accuracy, metrics, finished_at"
)
# Schema 2 glued the attack protocol into the defence label: "median (adaptive)".
_V2_PROTOCOLS = ("oblivious", "adaptive")
_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database
_STORE_TABLES = frozenset({"meta", "cells"})  # every robustlab store (schema 2 and 3) has them
# What SQLite's error codes mean for the store (the message text for Python < 3.11).
_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "malformed", "not a database")
_FULL = ("SQLITE_FULL", "database or disk is full")

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class CellRow:
    """One finished cell as stored.

    ``kind`` names the study part that made it (``degradation``, ``attack``), ``setting`` is the
    degradation or attack label (``clean`` for the clean setting) and ``protocol`` the attack
    protocol (``oblivious`` or ``adaptive``; empty for degradation cells). Everything a part
    measures beyond errors and accuracy is in ``metrics`` by name (``confusion``, ``copies``,
    ``psnr``, ``ssim``, ``identical``, ``seconds``, ...).
    """

    key: str
    kind: str
    model: str
    defense: str
    setting: str
    setting_name: str
    params: dict[str, Any]
    severity_name: str | None
    severity: float | None
    trial: int
    n: int
    errors: int
    accuracy: float
    protocol: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def confusion(self) -> list[list[int]]:
        """The confusion matrix (rows: true class, columns: predicted)."""
        return list(self.metrics.get("confusion", []))

    @property
    def copies(self) -> int:
        """Monte-Carlo copies of every test image."""
        return int(self.metrics.get("copies", 1))

    @property
    def seconds(self) -> float:
        """Compute time of the cell."""
        return float(self.metrics.get("seconds", 0.0))

    @property
    def psnr(self) -> float | None:
        """Mean finite PSNR (dB) of the degraded or attacked input vs the clean one."""
        value = self.metrics.get("psnr")
        return None if value is None else float(value)

    @property
    def ssim(self) -> float | None:
        """Mean SSIM of the degraded input vs the clean one (first copies)."""
        value = self.metrics.get("ssim")
        return None if value is None else float(value)

    @property
    def identical(self) -> int:
        """Inputs identical to the clean image (infinite PSNR)."""
        return int(self.metrics.get("identical", 0))

    def csv_row(self, epochs: int | str | None, **replace: Any) -> dict[str, Any]:
        """The row of ``results.csv`` (``replace`` overrides columns, e.g. plan labels)."""
        row: dict[str, Any] = {
            "kind": self.kind,
            "model": self.model,
            "epochs": "" if epochs is None else epochs,
            "defense": self.defense,
            "protocol": self.protocol,
            "degradation": self.setting,
            "degradation_name": self.setting_name,
            "severity_name": self.severity_name or "",
            "severity": "" if self.severity is None else repr(self.severity),
            "params": json.dumps(self.params, sort_keys=True),
            "trial": self.trial,
            "copies": self.copies,
            "n": self.n,
            "errors": self.errors,
            "accuracy": f"{self.accuracy:.6f}",
            "psnr": "" if self.psnr is None else f"{self.psnr:.4f}",
            "ssim": "" if self.ssim is None else f"{self.ssim:.4f}",
        }
        return {**row, **replace}


def _migrate_v2(db: sqlite3.Connection) -> None:
    """Rewrite a schema-2 ``cells`` table in schema 3, in one transaction (keys unchanged)."""
    rows = db.execute(
        "SELECT key, model, defense, degradation, degradation_name, params, severity_name, "
        "severity, trial, n, errors, accuracy, confusion, seconds, finished_at, copies, psnr, "
        "ssim, identical FROM cells"
    ).fetchall()
    converted = []
    for r in rows:
        defense, protocol, kind = r[2], "", "degradation"
        for candidate in _V2_PROTOCOLS:
            if defense.endswith(f" ({candidate})"):
                defense, protocol, kind = defense[: -len(candidate) - 3], candidate, "attack"
        metrics = {
            "confusion": json.loads(r[12]),
            "seconds": r[13],
            "copies": r[15],
            "psnr": r[16],
            "ssim": r[17],
            "identical": r[18],
        }
        converted.append(
            (r[0], kind, r[1], defense, protocol, r[3], r[4], r[5], r[6], r[7], r[8], r[9],
             r[10], r[11], json.dumps(metrics), r[14])
        )  # fmt: skip
    with db:
        db.execute("ALTER TABLE cells RENAME TO cells_v2")
        db.executescript(SCHEMA)
        db.executemany(f"INSERT INTO cells ({_COLUMNS}) VALUES ({','.join('?' * 16)})", converted)
        db.execute("DROP TABLE cells_v2")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def not_a_store(path: Path, reason: str) -> RobustlabError:
    """The error for a ``results.sqlite`` that robustlab refuses (left untouched).

    Example:
        >>> print(not_a_store(Path("run/results.sqlite"), "it is empty (0 bytes)"))
        ... # doctest: +ELLIPSIS
        run/results.sqlite is not a robustlab results store, or it is damaged: it is empty ...
    """
    return RobustlabError(
        f"{path} is not a robustlab results store, or it is damaged: {reason}. robustlab left "
        "the file untouched. Fix: move it away (e.g. rename it to results.sqlite.bad) and run "
        "the study again (trained models are reused from the model cache), or write the run "
        "into another run directory (robustlab run STUDY.yaml -o OTHER_DIR)"
    )


def _check_file(path: Path, create: bool) -> None:
    """Refuse, before SQLite opens it, a file that cannot be a results store.

    Raises:
        RobustlabError: for a folder, a missing file (unless ``create``), an empty file
            (unless ``create``: SQLite makes a new database of it), a file that is not a
            SQLite database, or one shorter than its header says (truncated).
    """
    if path.is_dir():
        raise not_a_store(path, "it is a folder, not a file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if create:
            return
        raise RobustlabError(
            f"no results store {path}; run a study there first (robustlab run STUDY.yaml -o "
            f"{path.parent})"
        ) from None
    if size == 0:
        if create:
            return
        raise not_a_store(path, "it is empty (0 bytes) and holds no results")
    with path.open("rb") as file:
        header = file.read(100)
    if not header.startswith(_SQLITE_MAGIC):
        raise not_a_store(path, "it is not a SQLite database")
    page_size = int.from_bytes(header[16:18], "big") if len(header) == 100 else 0
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is valid when its "version-valid-for" equals the change counter.
    claimed = pages * page_size if header[24:28] == header[92:96] else 0
    # With a write-ahead log beside it the file may be shorter than its header says: a
    # checkpoint cut short (a full disk) leaves the pages in the log, and SQLite reads them.
    wal = path.with_name(path.name + "-wal")
    logged = wal.is_file() and wal.stat().st_size > 0
    if len(header) < 100 or (size < claimed and not logged):
        raise not_a_store(
            path, f"it is truncated ({size:,} bytes of the {max(claimed, 100):,} its header needs)"
        )


def _translated(
    method: Callable[Concatenate[ResultsStore, _P], _R],
) -> Callable[Concatenate[ResultsStore, _P], _R]:
    """Turn SQLite's errors on a damaged store or a full disk into errors a user can act on."""

    @functools.wraps(method)
    def wrapper(store: ResultsStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(store, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            translated = store.translate(err)
            if translated is err:
                raise
            raise translated from err

    return wrapper


class ResultsStore:
    """The SQLite results store of one run directory.

    The file is checked before SQLite writes anything to it: a file that is not a robustlab
    store (another program's database, a damaged or truncated copy, garbage) is refused with
    :func:`not_a_store` and left untouched. A full disk while writing raises ``OSError`` with
    ``errno.ENOSPC``; rows already committed stay in the file.

    Args:
        path: the database file.
        create: create the file (and its tables) when it is missing or empty; with False
            (reading a finished run, as ``robustlab report`` does) the file must already be a
            store.

    Raises:
        RobustlabError: if the file is not a robustlab results store or was written by an
            incompatible robustlab version.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        _check_file(self.path, create)
        self._db = sqlite3.connect(self.path)
        try:
            self._open(create)
        except BaseException:
            self._db.close()
            raise

    def translate(self, err: sqlite3.DatabaseError) -> Exception:
        """The error to raise for SQLite's ``err`` on this store.

        A damaged file gives :func:`not_a_store`'s error, a full disk an ``OSError`` with
        ``errno.ENOSPC`` naming the file; any other error is returned unchanged.
        """
        code = f"{getattr(err, 'sqlite_errorname', '')} {err}"
        if any(mark in code for mark in _FULL):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        if any(mark in code for mark in _CORRUPT):
            return not_a_store(self.path, f"SQLite says: {err}")
        if "readonly" in code.lower().replace("-", "").replace(" ", ""):
            return RobustlabError(
                f"{self.path} cannot be opened for writing (SQLite says: {err}): its folder is "
                "read-only; copy the run directory to a writable folder and run the command "
                "there"
            )
        return err

    @_translated
    def _open(self, create: bool) -> None:
        # Only reads until the file is known to be a store: a refused file is never modified.
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        names = {
            name
            for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        tables = len(names)
        if tables and not names >= _STORE_TABLES:
            shown = ", ".join(sorted(names)[:5])
            raise not_a_store(self.path, f"it is a SQLite database of other tables ({shown})")
        if not tables and not create:
            raise not_a_store(self.path, "it is an empty SQLite database and holds no results")
        if tables and version not in (2, SCHEMA_VERSION):
            raise RobustlabError(
                f"{self.path} was written by another robustlab version (store schema {version}, "
                f"this one reads {SCHEMA_VERSION} and 2); move the run directory away or delete "
                "it, then run the study again (trained models are reused from the model cache)"
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if tables and version == 2:
            _migrate_v2(self._db)
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db.commit()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    @_translated
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key``."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str))
            )

    @_translated
    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    @_translated
    def record_model(self, model_id: str, path: str, card: dict[str, Any]) -> None:
        """Remember which cached model served ``model_id``."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?)", (model_id, path, json.dumps(card))
            )

    @_translated
    def models(self) -> dict[str, dict[str, Any]]:
        """``model_id -> {"path": ..., "card": {...}}`` for every model recorded."""
        rows = self._db.execute("SELECT model_id, path, card FROM models ORDER BY model_id")
        return {m: {"path": p, "card": json.loads(c)} for m, p, c in rows}

    @_translated
    def finished_keys(self) -> set[str]:
        """Keys of every finished cell."""
        return {k for (k,) in self._db.execute("SELECT key FROM cells")}

    @_translated
    def add_cells(
        self, rows: Iterable[CellRow], records: dict[str, dict[str, np.ndarray]] | None = None
    ) -> None:
        """Write finished cells (and their per-sample records) in one transaction."""
        now = time.time()
        blobs = []
        for key, arrays in (records or {}).items():
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
            blobs.append((key, buffer.getvalue()))
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO cells ({_COLUMNS}) VALUES ({','.join('?' * 16)})",
                [
                    (
                        r.key, r.kind, r.model, r.defense, r.protocol, r.setting, r.setting_name,
                        json.dumps(r.params, sort_keys=True), r.severity_name, r.severity,
                        r.trial, r.n, r.errors, r.accuracy, json.dumps(r.metrics), now,
                    )
                    for r in rows
                ],
            )  # fmt: skip
            self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?)", blobs)

    @_translated
    def records(self, key: str) -> dict[str, np.ndarray] | None:
        """Per-sample records of a cell (``psnr``, ``score``, ``predicted``, ``label``) or None."""
        row = self._db.execute("SELECT npz FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[0])) as data:
            return {name: data[name] for name in data.files}

    @_translated
    def cells(self, keys: Iterable[str] | None = None, kind: str | None = None) -> list[CellRow]:
        """Stored cells: all, those with the given keys, or those of one kind (no set order)."""
        query = f"SELECT {_COLUMNS} FROM cells"
        args: tuple[str, ...] = ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        rows = self._db.execute(query, args).fetchall()
        wanted = set(keys) if keys is not None else None
        return [
            CellRow(
                key=r[0], kind=r[1], model=r[2], defense=r[3], protocol=r[4], setting=r[5],
                setting_name=r[6], params=json.loads(r[7]), severity_name=r[8], severity=r[9],
                trial=r[10], n=r[11], errors=r[12], accuracy=r[13], metrics=json.loads(r[14]),
            )
            for r in rows
            if wanted is None or r[0] in wanted
        ]  # fmt: skip

    @_translated
    def add_example(
        self, setting: str, defense: str, images: bytes, shape: tuple[int, ...], labels: list[int]
    ) -> None:
        """Store example images (uint8 bytes of ``shape``) for a setting and defence."""
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO examples VALUES (?, ?, ?, ?, ?)",
                (setting, defense, images, json.dumps(list(shape)), json.dumps(labels)),
            )

    @_translated
    def examples(self) -> dict[tuple[str, str], tuple[bytes, tuple[int, ...], list[int]]]:
        """``(setting key, defence label) -> (uint8 bytes, shape, labels)``."""
        rows = self._db.execute("SELECT setting, defense, images, shape, labels FROM examples")
        return {
            (s, d): (bytes(b), tuple(json.loads(shape)), json.loads(labels))
            for s, d, b, shape, labels in rows
        }

    @_translated
    def export_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored result as plain rows (cells, records, examples, models), no meta.

        A Ray worker runs a shard into a private store and returns this; the driver, the only
        writer of the run's store, adds it with :meth:`import_rows`.
        """
        return {
            "cells": self._db.execute(f"SELECT {_COLUMNS} FROM cells").fetchall(),
            "records": [(k, bytes(b)) for k, b in self._db.execute("SELECT * FROM records")],
            "examples": [
                (s, d, bytes(b), shape, labels)
                for s, d, b, shape, labels in self._db.execute("SELECT * FROM examples")
            ],
            "models": self._db.execute("SELECT model_id, path, card FROM models").fetchall(),
        }

    @_translated
    def import_rows(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        """Add rows of :meth:`export_rows` in one transaction (examples already kept win)."""
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO cells ({_COLUMNS}) VALUES ({','.join('?' * 16)})",
                rows.get("cells", []),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?)", rows.get("records", [])
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO examples VALUES (?, ?, ?, ?, ?)", rows.get("examples", [])
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?)", rows.get("models", [])
            )
