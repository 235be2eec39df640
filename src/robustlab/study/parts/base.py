"""The study-part interface: every kind of experiment in a study plugs in the same way.

A study is its artefact graph (the models, :mod:`robustlab.study.artefacts`) plus *parts*: the
degradation sweep, the attacks, the minimal-noise search, certification, and more. A part

- **plans** keyed jobs from the validated study and its planned models (``plan``; None when the
  study does not use the part),
- **encodes** that plan as JSON, stored in the results store when the study runs, and
  **decodes** it again for the report, which therefore never re-plans, imports a user's file,
  builds a defence or loads a model,
- **runs** the jobs not yet finished, writing rows to the store as each finishes (``run``),
- gives its rows of ``results.csv`` (``csv_rows``), its columns of the defence leaderboard
  (``leaderboard``) and its report blocks (``findings`` for the report's opening bullets,
  ``lead_blocks`` right after the models, ``report_blocks`` in the body).

Parts are registered with :func:`register_part` in one list, :data:`PARTS`, ordered by
``order``; the runner and the report loop over it. Adding a part is one module in
:mod:`robustlab.study.parts` (discovered automatically) and never touches the runner.

Example:
    >>> from robustlab.study.parts import study_parts
    >>> [part.name for part in study_parts()]
    ['degradations', 'attacks', 'denoisers', 'minimal_noise', 'certify']
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from robustlab.data.base import Dataset
from robustlab.report.document import Block
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.config import StudyConfig
from robustlab.study.plan import PlannedModel
from robustlab.study.progress import SilentProgress
from robustlab.study.store import ResultsStore

if TYPE_CHECKING:  # the leaderboard module loads matplotlib, which a Ray worker does not need
    from robustlab.report.leaderboard import LeaderboardScores

P = TypeVar("P")

#: ``results.csv`` columns, one row per finished cell of any part. ``kind`` names the part,
#: ``degradation`` holds the degradation or attack label, ``protocol`` the attack protocol.
CSV_COLUMNS = [
    "kind", "model", "epochs", "defense", "protocol", "degradation", "degradation_name",
    "severity_name", "severity", "params", "trial", "copies", "n", "errors", "accuracy",
    "psnr", "ssim",
]  # fmt: skip


@dataclass
class PartRun:
    """What a part needs to run its jobs."""

    config: StudyConfig
    dataset: Dataset
    store: ResultsStore
    provider: ArtefactProvider
    fingerprint: str
    progress: SilentProgress = field(default_factory=SilentProgress)
    after_group: Callable[[Any], None] | None = None  # tests interrupt a run with it
    models: list[PlannedModel] = field(default_factory=list)  # the artefact graph's models

    @property
    def run_dir(self) -> Path:
        """The run directory (the store's folder)."""
        return self.store.path.parent


@dataclass
class ReportContext:
    """What a part may read to report: the store, the stored study and its models."""

    config: StudyConfig
    store: ResultsStore
    models: list[PlannedModel]
    classes: list[str]
    dataset: dict[str, Any]
    plans: dict[str, Any] = field(default_factory=dict)  # every part's decoded plan, by name

    @property
    def run_dir(self) -> Path:
        """The run directory (the store's folder)."""
        return self.store.path.parent


@dataclass(frozen=True)
class Shard(Generic[P]):
    """An independent piece of a part's plan: what one Ray task runs.

    ``plan`` is a plan of the part's own type restricted to the piece (a group of cells, a
    job); ``models`` the models the piece evaluates (its trainings must finish first; None
    means every model of the study). A shard is a unit of commit: the local executor stores
    it whole or not at all, so a shard is never half finished.
    """

    plan: P
    models: tuple[PlannedModel, ...] | None
    label: str


class StudyPart(ABC, Generic[P]):
    """One kind of experiment of a study (see the module docstring)."""

    name: ClassVar[str]
    order: ClassVar[int] = 100  # position in the runner and the report

    @abstractmethod
    def plan(self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]) -> P | None:
        """The part's jobs for ``config``, or None when the study does not use the part."""

    @abstractmethod
    def encode(self, plan: P) -> dict[str, Any]:
        """``plan`` as JSON, to be stored with the study."""

    @abstractmethod
    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> P:
        """The stored plan, restored without reading anything but ``data``."""

    @abstractmethod
    def size(self, plan: P) -> int:
        """How many results (cells or jobs) the plan has."""

    @abstractmethod
    def done(self, plan: P, store: ResultsStore) -> int:
        """How many of them are finished."""

    @abstractmethod
    def run(self, plan: P, context: PartRun) -> int:
        """Run the unfinished jobs; returns how many results were computed."""

    def shards(self, plan: P) -> list[Shard[P]]:
        """The plan cut into independent pieces, one task each on a distributed executor.

        Each piece must be committed whole by :meth:`run`; by default the plan is one piece.
        """
        return [Shard(plan, None, self.name)]

    def csv_rows(self, plan: P, store: ResultsStore) -> list[dict[str, Any]]:
        """Rows of ``results.csv`` (keys from :data:`CSV_COLUMNS`); none by default."""
        return []

    def findings(self, plan: P, context: ReportContext) -> list[str]:
        """Bullets for the report's opening findings; none by default."""
        return []

    def lead_blocks(self, plan: P, context: ReportContext) -> list[Block]:
        """Blocks shown right after the models (e.g. paper vs ours); none by default."""
        return []

    def leaderboard(self, plan: P, store: ResultsStore) -> LeaderboardScores | None:
        """The part's columns of the defence leaderboard; none by default."""
        return None

    @abstractmethod
    def report_blocks(self, plan: P, context: ReportContext) -> list[Block]:
        """The part's sections of the report."""


def planned_attack_keys(context: ReportContext) -> list[str]:
    """The keys of the attack cells the study plans now (never stale cells of the store)."""
    plan = context.plans.get("attacks")
    return [cell.key for cell in plan.cells] if plan is not None else []


def transfer_sources(context: ReportContext) -> dict[str, str]:
    """Attack label -> the model a transfer entry crafts its examples on."""
    plan = context.plans.get("attacks")
    if plan is None:
        return {}
    return {s.label: s.source for s in plan.settings if s.source is not None}


PARTS: list[StudyPart[Any]] = []


def register_part(part: type[StudyPart[Any]]) -> type[StudyPart[Any]]:
    """Class decorator: add one instance of ``part`` to :data:`PARTS` (kept sorted by order)."""
    if any(p.name == part.name for p in PARTS):
        raise ValueError(f"study part '{part.name}' is registered twice")
    PARTS.append(part())
    PARTS.sort(key=lambda p: p.order)
    return part


def study_parts() -> list[StudyPart[Any]]:
    """Every registered part, in order (importing the built-in ones first)."""
    import robustlab.study.parts as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "base":
            importlib.import_module(f"{package.__name__}.{module.name}")
    return list(PARTS)
