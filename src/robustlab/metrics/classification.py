"""Numbers from confusion matrices and accuracies: what the papers tabulate.

- per-class precision and recall (aghdam2016 Tables 1-3), from a confusion matrix whose rows
  are true classes and columns predictions;
- error reduction in % (lin2022): ``100 * (e_bare - e_defended) / e_bare``;
- relative improvement (ghosh2018 Table 1): ``(d' - d) / (c - d)``, where ``c`` is the
  baseline's clean accuracy, ``d`` its degraded accuracy and ``d'`` the degraded accuracy with
  the method: 0 = no gain, 1 = back to clean accuracy;
- corruption error CE, mCE and relative mCE against a baseline (Hendrycks & Dietterich 2019):
  ``CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}``, relative ``CE_c = sum_s (E_{s,c} - E_clean) /
  sum_s (E^base_{s,c} - E^base_clean)``, each averaged over corruptions ``c``.

Example:
    >>> import numpy as np
    >>> confusion = np.array([[8, 2], [1, 9]])
    >>> precision_recall(confusion)
    (array([0.88888889, 0.81818182]), array([0.8, 0.9]))
    >>> round(relative_improvement(clean=0.70, degraded=0.61, improved=0.65), 3)
    0.444
    >>> corruption_error([20, 40], [40, 40])
    0.75
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def precision_recall(confusion: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per-class precision and recall; NaN for a class never predicted / never present."""
    matrix = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = hits / matrix.sum(axis=0)
        recall = hits / matrix.sum(axis=1)
    return precision, recall


def error_reduction(bare_errors: float, defended_errors: float) -> float | None:
    """Percentage of the bare model's errors that a defence removes (None if it made none)."""
    if bare_errors <= 0:
        return None
    return 100.0 * (bare_errors - defended_errors) / bare_errors


def relative_improvement(clean: float, degraded: float, improved: float) -> float | None:
    """ghosh2018's ``(d' - d) / (c - d)``; None when degradation cost nothing (``c == d``)."""
    gap = clean - degraded
    if abs(gap) < 1e-12:
        return None
    return (improved - degraded) / gap


def corruption_error(errors: Sequence[float], baseline_errors: Sequence[float]) -> float | None:
    """``sum(errors) / sum(baseline_errors)`` over the severities of one corruption."""
    denominator = float(sum(baseline_errors))
    if denominator <= 0:
        return None
    return float(sum(errors)) / denominator


def relative_corruption_error(
    errors: Sequence[float],
    clean_error: float,
    baseline_errors: Sequence[float],
    baseline_clean_error: float,
) -> float | None:
    """Relative CE: the error *increase* over clean, normalised by the baseline's increase."""
    denominator = float(sum(e - baseline_clean_error for e in baseline_errors))
    if abs(denominator) < 1e-12:
        return None
    return float(sum(e - clean_error for e in errors)) / denominator
