"""Studies: YAML config, planner, executor, results store and the runner tying them together.

Example:
    >>> from robustlab.study import load_config
    >>> from robustlab.study.runner import builtin_config
    >>> load_config(builtin_config("quickstart")).dataset.name
    'mnist-sample'
"""

from robustlab.study.config import StudyConfig, load_config, parse_config
from robustlab.study.runner import RunResult, run_study

__all__ = ["RunResult", "StudyConfig", "load_config", "parse_config", "run_study"]
