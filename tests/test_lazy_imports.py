"""The package's public names load on first use, and a Ray worker's modules stay light.

A Ray worker imports ``robustlab.study.ray_executor`` and unpickles the study parts; before the
names of ``robustlab`` and ``robustlab.study`` were lazy, that pulled in the runner, the report
(matplotlib) and SciPy's statistics, about 1.5 s of every worker's start.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import robustlab
import robustlab.study


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())


def test_a_workers_imports_leave_out_plotting_statistics_and_the_runner() -> None:
    loaded = _modules_after(
        "import pickle\n"
        "import robustlab.study.ray_executor\n"
        "from robustlab.study.parts import study_parts\n"
        "for part in study_parts():\n"
        "    pickle.loads(pickle.dumps(part))\n"
    )
    assert "robustlab.study.ray_executor" in loaded
    heavy = {"matplotlib", "scipy.stats", "robustlab.study.runner", "robustlab.report.build"}
    assert not heavy & loaded


def test_every_public_name_resolves_and_unknown_names_raise() -> None:
    for name in robustlab.__all__:
        assert getattr(robustlab, name) is not None
        assert name in dir(robustlab)
    for name in robustlab.study.__all__:
        assert getattr(robustlab.study, name) is not None
    assert robustlab.run_study is robustlab.study.run_study
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = robustlab.no_such_name  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = robustlab.study.no_such_name  # type: ignore[attr-defined]


def test_the_report_still_draws_on_the_agg_backend() -> None:
    from robustlab.report import build_report
    from robustlab.report.plots import pyplot

    assert callable(build_report)
    assert pyplot().get_backend().lower() == "agg"
