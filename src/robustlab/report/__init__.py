"""Reports: Markdown and self-contained HTML built from a run's results store alone.

Example:
    >>> from robustlab.report import build_report
    >>> callable(build_report)
    True
"""

from robustlab.report.build import build_report

__all__ = ["build_report"]
