"""Two runs of one study into one run directory compute each cell once in all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

STUDY = {
    "name": "concurrent",
    "dataset": {"name": "mnist-sample", "train_limit": 500, "test_limit": 300},
    "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    "degradations": [{"name": "gaussian_noise", "grid": {"sigma": [0.1, 0.2, 0.3]}}],
    "defenses": ["none", "median"],
    "trials": 2,
}

RUN = textwrap.dedent(
    """
    import json, sys
    from robustlab.study.runner import run_study
    from robustlab.train.cache import ModelCache
    result = run_study(sys.argv[1], run_dir=sys.argv[2], cache=ModelCache(sys.argv[3]))
    print(json.dumps({"cells": result.cells_run, "total": result.cells_total,
                      "trained": result.trained}))
    """
)


@pytest.mark.slow
def test_two_concurrent_runs_share_the_work(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    args = [str(study), str(tmp_path / "run"), str(tmp_path / "cache")]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(r["cells"] for r in results) == results[0]["total"] == 14
    assert sum(len(r["trained"]) for r in results) == 1  # the model trained once in all
    waited = [err for _, err in outputs if "being written by another run" in err]
    assert len(waited) == 1
    alone = tmp_path / "alone"
    subprocess.run(
        [sys.executable, "-c", RUN, str(study), str(alone), str(tmp_path / "cache")], check=True,
        capture_output=True,
    )  # fmt: skip
    assert (tmp_path / "run" / "results.csv").read_text() == (alone / "results.csv").read_text()
