"""Studies: YAML config, planner, executor, results store and the runner tying them together.

Example:
    >>> from robustlab.study import load_config
    >>> from robustlab.study.runner import builtin_config
    >>> load_config(builtin_config("quickstart")).dataset.name
    'mnist-sample'
"""

from typing import TYPE_CHECKING

from robustlab.lazy_names import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = ["RunResult", "StudyConfig", "load_config", "parse_config", "run_study"]
