"""Reports: Markdown and self-contained HTML built from a run's results store alone.

Example:
    >>> from robustlab.report import build_report
    >>> callable(build_report)
    True
"""

from typing import TYPE_CHECKING

from robustlab.lazy_names import lazy_names

if TYPE_CHECKING:
    from robustlab.report.build import build_report

# Imported on first use (PEP 562): the report's modules load matplotlib, which a module that
# needs only robustlab.report.document (a Ray worker's study parts) must not pay for.
__getattr__, __dir__ = lazy_names(__name__, {"build_report": "robustlab.report.build"}, globals())

__all__ = ["build_report"]
