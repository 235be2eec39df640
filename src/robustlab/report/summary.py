"""Aggregation of stored cells into per-setting statistics (mean and spread over trials).

Example:
    >>> from robustlab.study.store import CellRow
    >>> rows = [
    ...     CellRow("k", "degradation", "m", "none", "sp", "salt_pepper", {}, "amount", 0.1, t,
    ...             100, e, 0.9)
    ...     for t, e in enumerate([10, 14])
    ... ]
    >>> stat = summarise(rows)[("m", "none", "sp", 0.1)]
    >>> stat.errors_mean, round(stat.errors_std, 3), stat.trials
    (12.0, 2.828, 2)
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from robustlab.study.store import CellRow

StatKey = tuple[str, str, str, float | None]  # model, defence, degradation label, severity


@dataclass(frozen=True)
class Stat:
    """Errors and accuracy of one (model, defence, degradation, severity) over its trials."""

    n: int
    trials: int
    errors_mean: float
    errors_std: float
    accuracy_mean: float
    accuracy_std: float


def summarise(rows: list[CellRow]) -> dict[StatKey, Stat]:
    """Group rows by (model, defence, degradation label, severity) and aggregate over trials."""
    groups: dict[StatKey, list[CellRow]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.defense, row.setting, row.severity)].append(row)
    out: dict[StatKey, Stat] = {}
    for key, members in groups.items():
        errors = [float(r.errors) for r in members]
        accuracy = [r.accuracy for r in members]
        out[key] = Stat(
            n=members[0].n,
            trials=len(members),
            errors_mean=statistics.fmean(errors),
            errors_std=statistics.stdev(errors) if len(errors) > 1 else 0.0,
            accuracy_mean=statistics.fmean(accuracy),
            accuracy_std=statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
        )
    return out
