"""Studies: YAML config, planner, executor, results store and the runner tying them together.

Example:
    >>> from robustlab.study import load_config
    >>> from robustlab.study.runner import builtin_config
    >>> load_config(builtin_config("quickstart")).dataset.name
    'mnist-sample'
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robustlab.study.config import StudyConfig, load_config, parse_config
    from robustlab.study.runner import RunResult, run_study

# Imported on first use (PEP 562): a module of this package (a Ray worker's ray_executor, the
# config checks) must not pull in the runner, the report and their plotting and statistics.
_LAZY = {
    "RunResult": "robustlab.study.runner",
    "StudyConfig": "robustlab.study.config",
    "load_config": "robustlab.study.config",
    "parse_config": "robustlab.study.config",
    "run_study": "robustlab.study.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'robustlab.study' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["RunResult", "StudyConfig", "load_config", "parse_config", "run_study"]
