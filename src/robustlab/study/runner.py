"""Running a study end to end: data, plan, execution, results table and report.

Example:
    >>> # robustlab.run_study("configs/quickstart.yaml") trains, evaluates and reports;
    >>> # see the README for the command-line equivalent, `robustlab run`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from robustlab import __version__
from robustlab.atomic import write_text_atomic
from robustlab.data.base import Dataset
from robustlab.device import resolve_device, threads_limited
from robustlab.errors import ConfigError
from robustlab.locks import exclusive
from robustlab.paths import CACHE_ENV
from robustlab.report.build import PLAN_META, build_report, encode_plan
from robustlab.study.artefacts import ArtefactProvider, artefact_graph
from robustlab.study.config import StudyConfig, load_config, load_configs, parse_config
from robustlab.study.dry_run import check_pieces_on_images
from robustlab.study.executor import GroupCallback
from robustlab.study.executor_config import ExecutorConfig
from robustlab.study.parts import CSV_COLUMNS, PartRun, study_parts
from robustlab.study.parts.base import StudyPart
from robustlab.study.plan import PlannedModel, plan_models
from robustlab.study.progress import RichProgress, SilentProgress
from robustlab.study.run_dir import check_run_dir, check_writable_folder
from robustlab.study.store import STORE_NAME, ResultsStore
from robustlab.study.study_data import data_fingerprint, prepare_dataset
from robustlab.train.cache import ModelCache

RUN_LOCK = ".robustlab.lock"  # held by the one run writing a run directory


@dataclass
class RunResult:
    """Where a finished study left its outputs."""

    run_dir: Path
    report_md: Path
    report_html: Path
    results_csv: Path
    cells_run: int  # cells (degradation and attack parts) computed by this run
    cells_total: int
    seconds: float
    searches_run: int = 0  # minimal-noise jobs (model x method) computed by this run
    searches_total: int = 0
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (run, total)
    trained: list[str] = field(default_factory=list)  # artefacts trained by this run, in order


def builtin_config(name: str) -> Path:
    """The path of a config shipped with robustlab (``quickstart``, ``papers/lin2022``)."""
    root = resources.files("robustlab") / "configs"
    candidate = Path(str(root)) / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not candidate.is_file():
        shipped = sorted(
            str(p.relative_to(Path(str(root)))).removesuffix(".yaml")
            for p in Path(str(root)).rglob("*.yaml")
        )
        raise ConfigError(f"no study file '{name}'; built-in studies: {', '.join(shipped)}")
    return candidate


def resolve_config_path(path_or_name: str | os.PathLike[str] | None) -> Path:
    """A study file path: an existing file, or the name of a built-in study (default quickstart)."""
    if path_or_name is None:
        return builtin_config("quickstart")
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml") and not path.is_absolute() and not path.exists():
        try:
            return builtin_config(str(path).removeprefix("configs/"))
        except ConfigError:
            pass
    if path.is_dir():
        raise ConfigError(
            f"study file {path} is a folder (resolved to {path.resolve()}); name a .yaml file "
            "in it, or a built-in study such as quickstart or papers/lin2022"
        )
    raise ConfigError(
        f"study file {path} not found (resolved to {path.resolve()}); give a path to a YAML "
        "file or a built-in name such as quickstart or papers/lin2022"
    )


def as_study_config(
    config: StudyConfig | dict[str, Any] | str | os.PathLike[str] | None,
) -> StudyConfig:
    """A validated study from a :class:`StudyConfig`, a dict, a path, a built-in name or None.

    Raises:
        ConfigError: for an invalid study, a missing file, or a value of another type.
    """
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config, "study given as a dict")
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(resolve_config_path(config))
    raise ConfigError(
        f"a study is a StudyConfig, a dict, a path to a YAML file or a built-in name, got "
        f"{type(config).__name__}"
    )


def write_results_csv(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write the tidy results table (columns :data:`CSV_COLUMNS`) atomically; returns rows."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
        written += 1
    write_text_atomic(path, buffer.getvalue())
    return written


def run_study(
    config: StudyConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    run_dir: str | os.PathLike[str] | None = None,
    cache: ModelCache | None = None,
    progress: bool = False,
    after_group: GroupCallback | None = None,
    executor: ExecutorConfig | None = None,
) -> RunResult:
    """Run a study: train or fetch models, evaluate every pending cell, write table and report.

    A rerun of the same study in the same run directory skips finished cells and cached models,
    so an interrupted run resumes where it stopped and ends with identical numbers.

    Args:
        config: a :class:`StudyConfig`, a dict as the YAML would give, a path to a YAML study,
            a built-in name, or None for the quickstart study.
        data_dir: the data directory (else ``$ROBUSTLAB_DATA``, else the user cache).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        run_dir: where results go (else the study's ``output``, else ``runs/<name>``).
        cache: the model cache (default: ``$ROBUSTLAB_CACHE`` or the user cache).
        progress: show progress bars on stderr.
        after_group: called after each finished group (for tests that interrupt a run; the
            local executor only).
        executor: where trainings and cells run (default: the study's ``executor:`` block,
            else this process); see :class:`~robustlab.study.executor_config.ExecutorConfig`.
    """
    began = time.perf_counter()
    config = as_study_config(config)
    target = config.run_dir(run_dir)
    model_cache = cache or ModelCache()
    # Where results and models go is checked before any data is read or model trained.
    check_run_dir(target, config.name)
    check_writable_folder(model_cache.root, "model cache", f"set {CACHE_ENV} to a writable folder")
    torch_device = resolve_device(device)
    dataset = prepare_dataset(config, data_dir)
    check_pieces_on_images(config, next(dataset.test.batches(1))[0])
    fingerprint = data_fingerprint(dataset)
    models = plan_models(config)
    evaluated = [m for m in models if m.evaluated]  # quality networks are built on, not scored
    planned = [
        (part, plan)
        for part in study_parts()
        if (plan := part.plan(config, fingerprint, evaluated)) is not None
    ]

    def waiting(holder: str) -> None:
        sys.stderr.write(
            f"{target} is being written by another run (process {holder}); waiting for it to "
            "finish, then reusing its results\n"
        )

    # One writer per run directory: a second run of the study waits, then computes only what
    # the first did not.
    with exclusive(target / RUN_LOCK, on_wait=waiting):
        store = ResultsStore(target / STORE_NAME)
        return _run_locked(
            config, target, store, dataset, fingerprint, models, planned, model_cache,
            torch_device, data_dir, device, progress, after_group, executor, began,
        )  # fmt: skip


def _run_locked(
    config: StudyConfig,
    target: Path,
    store: ResultsStore,
    dataset: Dataset,
    fingerprint: str,
    models: list[PlannedModel],
    planned: list[tuple[StudyPart[Any], Any]],
    model_cache: ModelCache,
    torch_device: torch.device,
    data_dir: str | os.PathLike[str] | None,
    device: str,
    progress: bool,
    after_group: GroupCallback | None,
    executor: ExecutorConfig | None,
    began: float,
) -> RunResult:
    options = executor or config.executor
    try:
        store.set_meta("config", config.model_dump(mode="json"))
        store.set_meta("data_fingerprint", fingerprint)
        store.set_meta(
            PLAN_META,
            encode_plan(models, {part.name: part.encode(plan) for part, plan in planned}),
        )
        store.set_meta("graph", [node.to_json() for node in artefact_graph(models)])
        store.set_meta(
            "dataset",
            {
                "name": dataset.name,
                "classes": dataset.classes,
                "notes": dataset.notes,
                "train_size": len(dataset.train),
                "test_size": len(dataset.test),
                "image_shape": list(dataset.image_shape),
            },
        )
        store.set_meta(
            "environment",
            {
                "robustlab": __version__,
                "torch": torch.__version__,
                "device": str(torch_device),
                "threads": (options.cpus or torch.get_num_threads())
                if options.name == "local"
                else options.cpus_per_task,
                "executor": options.model_dump(mode="json"),
            },
        )
        reporter = RichProgress() if progress else SilentProgress()
        provider = ArtefactProvider(
            dataset, store, device=torch_device, cache=model_cache, progress=reporter
        )
        context = PartRun(
            config,
            dataset,
            store,
            provider,
            fingerprint,
            reporter,
            after_group=after_group,
            models=models,
        )
        with reporter:
            if options.name == "ray":
                from robustlab.study.ray_executor import run_on_ray

                ran = run_on_ray(
                    planned, config=config, models=models, provider=provider,
                    fingerprint=fingerprint, data_dir=data_dir, device=device, options=options,
                    progress=reporter,
                )  # fmt: skip
            else:
                ran = run_parts_locally(planned, context, options)
        results_csv = target / "results.csv"
        write_results_csv(
            (row for part, plan in planned for row in part.csv_rows(plan, store)), results_csv
        )
        write_text_atomic(target / "models.json", json.dumps(models_json(store, models), indent=2))
        write_text_atomic(target / "config.yaml", config_yaml(config))
        report_md, report_html = build_report(target)
    finally:
        store.close()
        if options.name == "ray":
            from robustlab.study.ray_executor import wait_for_ray_shutdown

            wait_for_ray_shutdown()  # the cluster stopped while the report was written
    cells = [v for p, v in ran.items() if p != "minimal_noise"]
    searches = ran.get("minimal_noise", (0, 0))
    return RunResult(
        run_dir=target,
        report_md=report_md,
        report_html=report_html,
        results_csv=results_csv,
        cells_run=sum(r for r, _ in cells),
        cells_total=sum(t for _, t in cells),
        seconds=time.perf_counter() - began,
        searches_run=searches[0],
        searches_total=searches[1],
        parts=ran,
        trained=list(provider.trained),
    )


def run_parts_locally(
    planned: list[tuple[StudyPart[Any], Any]], context: PartRun, options: ExecutorConfig
) -> dict[str, tuple[int, int]]:
    """Run every part in this process, in order; part name -> (computed, total).

    With ``options.cpus`` PyTorch and OpenCV use that many threads for the run (restored
    afterwards), so several studies on one machine do not oversubscribe its cores.
    """
    with threads_limited(options.cpus):
        return {part.name: (part.run(plan, context), part.size(plan)) for part, plan in planned}


def models_json(store: ResultsStore, models: list[PlannedModel]) -> dict[str, Any]:
    """``models.json``: every model used (path and card) with its strategy and parents."""
    recorded = store.models()
    out: dict[str, Any] = {}
    for node in artefact_graph(models):
        if node.id in recorded:
            out[node.id] = {**recorded[node.id], "graph": node.to_json()}
    return out


def run_studies(
    path_or_name: str | os.PathLike[str] | None = None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    only: list[str] | None = None,
    executor_overrides: dict[str, Any] | None = None,
    **options: Any,
) -> list[RunResult]:
    """Run every study of a (possibly multi-document) study file, in order.

    With several studies, ``run_dir`` is a parent folder: each study gets ``run_dir/<name>``.
    ``only`` names the studies to run (e.g. the CIFAR-10 study of a replication whose first
    study runs on the offline stand-in); unknown names fail before any work. Other keyword
    arguments are those of :func:`run_study`. ``executor_overrides`` (``name``, ``address``,
    ``cpus``: the command line's ``--executor``, ``--address``, ``--cpus``) replace those keys
    of each study's ``executor:`` block.
    """
    configs = load_configs(resolve_config_path(path_or_name))
    if only:
        names = [c.name for c in configs]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(
                f"no study named {', '.join(unknown)} in {path_or_name}; its studies: "
                f"{', '.join(names)}"
            )
        configs = [c for c in configs if c.name in only]
    results = []
    for config in configs:
        target = run_dir
        if run_dir is not None and len(configs) > 1:
            target = Path(run_dir) / config.name
        executor = config.executor
        if executor_overrides:
            executor = merge_executor(executor, executor_overrides)
        results.append(run_study(config, run_dir=target, executor=executor, **options))
    return results


def merge_executor(base: ExecutorConfig, overrides: dict[str, Any]) -> ExecutorConfig:
    """``base`` with ``overrides`` applied, validated (a bad value is a :class:`ConfigError`).

    Example:
        >>> merge_executor(ExecutorConfig(cpus_per_task=2), {"name": "ray"}).cpus_per_task
        2
    """
    try:
        return ExecutorConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"executor options: {problems}") from None


def config_yaml(config: StudyConfig) -> str:
    """The validated configuration as YAML (defaults filled in), for the run directory."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
