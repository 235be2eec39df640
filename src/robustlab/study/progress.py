"""Progress reporting for long runs: rich bars on a terminal, silence in tests.

Example:
    >>> with SilentProgress() as progress:
    ...     task = progress.start("evaluate", total=10)
    ...     progress.advance(task, 10)
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SilentProgress:
    """A progress reporter that shows nothing."""

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def start(self, description: str, total: int) -> int:
        """Open a task of ``total`` units; returns its id."""
        return 0

    def advance(self, task: int, amount: int = 1) -> None:
        """Record ``amount`` finished units of ``task``."""

    def finish(self, task: int) -> None:
        """Close ``task``."""

    def log(self, message: str) -> None:
        """Print a line above the bars."""


class RichProgress(SilentProgress):
    """Progress bars with counts, elapsed and remaining time (rich)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bars = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

    def __enter__(self) -> RichProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._bars.__exit__(*args)

    def start(self, description: str, total: int) -> int:
        """Open a bar of ``total`` units."""
        return int(self._bars.add_task(description, total=total))

    def advance(self, task: int, amount: int = 1) -> None:
        """Advance a bar."""
        self._bars.advance(task, amount)  # type: ignore[arg-type]

    def finish(self, task: int) -> None:
        """Complete a bar."""
        self._bars.update(task, completed=self._bars.tasks[task].total)  # type: ignore[arg-type]

    def log(self, message: str) -> None:
        """Print a line above the bars."""
        # Plain text: messages quote lists ("bins=[clean, jpeg]") that rich would eat as markup.
        self._bars.console.print(message, markup=False, highlight=False)
