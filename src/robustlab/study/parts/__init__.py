"""Study parts: degradation sweep, attacks, minimal-noise search, certification (one module each).

Example:
    >>> from robustlab.study.parts import study_parts
    >>> study_parts()[0].name
    'degradations'
"""

from robustlab.study.parts.base import (
    CSV_COLUMNS,
    PARTS,
    PartRun,
    ReportContext,
    StudyPart,
    register_part,
    study_parts,
)

__all__ = [
    "CSV_COLUMNS",
    "PARTS",
    "PartRun",
    "ReportContext",
    "StudyPart",
    "register_part",
    "study_parts",
]
