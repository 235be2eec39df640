"""The Ray executor: same numbers as the local executor, each artefact trained once, resume.

The fast tests need no Ray (shards, store rows, options, locks); the cluster tests start a
private 2-CPU Ray cluster (loopback, no dashboard) and are skipped where Ray is not installed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from robustlab.errors import ConfigError
from robustlab.locks import exclusive
from robustlab.study.config import StudyConfig
from robustlab.study.executor_config import ExecutorConfig
from robustlab.study.parts import study_parts
from robustlab.study.plan import plan_models
from robustlab.study.runner import merge_executor, run_study
from robustlab.study.store import ResultsStore
from robustlab.train.cache import ModelCache

STUDY = {
    "name": "ray-equality",
    "seed": 3,
    "dataset": {"name": "mnist-sample", "train_limit": 600, "test_limit": 300},
    "models": [
        {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]},
        {"name": "tl", "parent": "cnn-e1", "strategy": "transfer", "epochs": [1]},
        # A denoiser used only as a defence: no cell names it as a model, every shard needs it.
        {
            "name": "den",
            "architecture": "huang2021_denoiser",
            "params": {"in_channels": 1, "image_size": 28, "width": 4},
            "parent": "cnn-e1",
            "strategy": {
                "name": "denoise",
                "params": {"perturbation": {"degradation": "gaussian_noise", "levels": [0.3]}},
            },
            "epochs": [1],
        },
    ],
    "degradations": [
        {"name": "salt_pepper", "grid": {"amount": [0.1, 0.3]}},
        {"name": "gaussian_noise", "grid": {"sigma": [0.2]}},
    ],
    "trials": 2,
    "defenses": ["none", "median", "denoiser:model=den-e1"],
    "attacks": [{"name": "fgsm", "grid": {"eps": [0.1]}}],
}


def _config(**changes: object) -> StudyConfig:
    return StudyConfig.model_validate({**STUDY, **changes})


def test_executor_options_refuse_auto_and_merge_overrides() -> None:
    with pytest.raises(ValueError, match="another user's Ray cluster"):
        ExecutorConfig(name="ray", address="auto")
    merged = merge_executor(ExecutorConfig(cpus_per_task=2), {"name": "ray", "cpus": 2})
    assert (merged.name, merged.cpus, merged.cpus_per_task) == ("ray", 2, 2)
    with pytest.raises(ConfigError, match="executor options: name"):
        merge_executor(ExecutorConfig(), {"name": "dask"})
    with pytest.raises(ConfigError, match="cpus"):
        merge_executor(ExecutorConfig(), {"cpus": 0})


def test_shards_cover_every_result_once() -> None:
    config = _config(
        minimal_noise={"methods": ["ga", "fmn"], "images": 4},
        certify={"sigma": [0.25, 0.5], "n0": 10, "n": 20, "images": 4},
    )
    models = [m for m in plan_models(config) if m.evaluated]
    for part in study_parts():
        plan = part.plan(config, "fp", models)
        if plan is None:
            continue
        shards = part.shards(plan)
        assert sum(part.size(s.plan) for s in shards) == part.size(plan), part.name
        for shard in shards:
            assert shard.models is not None and shard.models, part.name


def test_store_rows_round_trip(tmp_path: Path) -> None:
    source = ResultsStore(tmp_path / "a.sqlite")
    from robustlab.study.store import CellRow

    row = CellRow(
        key="k", kind="degradation", model="m", defense="none", setting="clean",
        setting_name="clean", params={}, severity_name=None, severity=None, trial=0, n=3,
        errors=1, accuracy=2 / 3, metrics={"confusion": [[1, 0], [1, 1]]},
    )  # fmt: skip
    import numpy as np

    source.add_cells([row], {"k": {"psnr": np.arange(3, dtype=np.float32)}})
    source.add_example("clean", "none", b"\x00\x01", (1, 1, 1, 2), [0])
    source.record_model("m", "/cache/m", {"epochs": 1})
    target = ResultsStore(tmp_path / "b.sqlite")
    target.import_rows(source.export_rows())
    assert target.cells() == source.cells()
    assert target.records("k")["psnr"].tolist() == [0.0, 1.0, 2.0]  # type: ignore[index]
    assert target.examples() == source.examples()
    assert target.models() == source.models()


def test_exclusive_lock_serialises_holders(tmp_path: Path) -> None:
    order: list[str] = []
    lock = tmp_path / "entry" / ".lock"

    def hold(name: str) -> None:
        with exclusive(lock):
            order.append(f"{name} in")
            time.sleep(0.05)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


# --- on a private Ray cluster -----------------------------------------------------------------

ray = pytest.importorskip("ray", reason="the Ray executor's cluster tests need robustlab[ray]")


_TOKEN = Path.home() / ".ray" / "auth_token"
_TOKEN_BEFORE = _TOKEN.exists()


def test_cpus_are_refused_for_an_existing_cluster_before_connecting() -> None:
    from robustlab.study.ray_executor import ray_cluster

    options = ExecutorConfig(name="ray", address="10.255.255.1:6379", cpus=2)
    with pytest.raises(ConfigError, match="sizes only a private cluster"), ray_cluster(options):
        pass


def _ray(tmp_path: Path, **options: object) -> ExecutorConfig:
    return ExecutorConfig(
        name="ray", cpus=2, worker_cache=str(tmp_path / "worker-cache"), **options
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """The study run by the local executor on one thread (the Ray tasks' thread count)."""
    root = tmp_path_factory.mktemp("local")
    result = run_study(
        _config(),
        run_dir=root / "run",
        cache=ModelCache(root / "cache"),
        executor=ExecutorConfig(cpus=1),
    )
    yield result.results_csv, result.trained


def _ray_processes(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["shared", "object_store"])
def test_ray_equals_local_and_trains_each_artefact_once(
    tmp_path: Path, local_run: tuple[Path, list[str]], weights: str
) -> None:
    local_csv, local_trained = local_run
    assert sorted(local_trained) == ["cnn-e1", "den-e1", "tl-e1"]
    result = run_study(
        _config(),
        run_dir=tmp_path / "run",
        cache=ModelCache(tmp_path / "cache"),
        executor=_ray(tmp_path, weights=weights),
    )
    assert result.results_csv.read_text() == local_csv.read_text()
    import ray

    assert not ray.is_initialized()  # the background shut-down was waited for
    assert sorted(result.trained) == ["cnn-e1", "den-e1", "tl-e1"]  # each once
    assert result.trained.index("cnn-e1") < result.trained.index("tl-e1")  # parent first
    assert result.trained.index("cnn-e1") < result.trained.index("den-e1")
    assert _TOKEN_BEFORE or not _TOKEN.exists()  # the private cluster's token is not saved
    again = run_study(
        _config(),
        run_dir=tmp_path / "run",
        cache=ModelCache(tmp_path / "cache"),
        executor=_ray(tmp_path, weights=weights),
    )
    assert (again.cells_run, again.trained) == (0, [])


@pytest.mark.slow
def test_killed_worker_loses_nothing_and_the_study_completes(
    tmp_path: Path, local_run: tuple[Path, list[str]]
) -> None:
    killed: list[int] = []

    def kill_one_shard_worker() -> None:
        deadline = time.monotonic() + 240
        while not killed and time.monotonic() < deadline:
            for pid in _ray_processes("ray::degradations:"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_shard_worker, daemon=True)
    killer.start()
    result = run_study(
        _config(),
        run_dir=tmp_path / "run",
        cache=ModelCache(tmp_path / "cache"),
        executor=_ray(tmp_path),
    )
    killer.join(timeout=5)
    assert killed, "no shard worker was seen running"
    assert result.results_csv.read_text() == local_run[0].read_text()
    assert (result.cells_run, result.cells_total) == (54, 54)


@pytest.mark.slow
def test_killed_driver_resumes(tmp_path: Path, local_run: tuple[Path, list[str]]) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "executor": {"name": "ray", "cpus": 2}}))
    run_dir = tmp_path / "run"
    env = {**os.environ, "ROBUSTLAB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "robustlab", "run", str(study), "-o", str(run_dir), "-q"]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store_path = run_dir / "results.sqlite"
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and driver.poll() is None:
        if store_path.exists():
            store = ResultsStore(store_path)
            done = len(store.finished_keys())
            store.close()
            if done >= 4:
                break
        time.sleep(0.1)
    assert driver.poll() is None, "the study finished before the driver could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 30  # the private cluster shares the driver's fate
    while _ray_processes("/rl-ray-") and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = _ray_processes("/rl-ray-")
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, "the private Ray cluster outlived its killed driver"
    store = ResultsStore(store_path)
    kept = len(store.finished_keys())  # what the killed driver had committed
    store.close()
    assert 4 <= kept < 54
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # The rerun resumes: it computes only the cells the killed driver had not committed.
    computed = re.search(r"(\d+) cells computed \((\d+) in the study\)", rerun.stdout)
    assert computed is not None, rerun.stdout
    assert (int(computed[1]), int(computed[2])) == (54 - kept, 54)
    assert (run_dir / "results.csv").read_text() == local_run[0].read_text()
    store = ResultsStore(store_path)
    assert len(store.finished_keys()) == 54
    store.close()
