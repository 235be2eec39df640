"""Reports: Markdown and self-contained HTML built from a run's results store alone.

Example:
    >>> from robustlab.report import build_report
    >>> callable(build_report)
    True
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robustlab.report.build import build_report


def __getattr__(name: str) -> Any:
    # Imported on first use (PEP 562): the report's modules load matplotlib, which a module
    # that needs only robustlab.report.document (a Ray worker's study parts) must not pay for.
    if name != "build_report":
        raise AttributeError(f"module 'robustlab.report' has no attribute {name!r}")
    from robustlab.report.build import build_report

    return build_report


__all__ = ["build_report"]
