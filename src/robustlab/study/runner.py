"""Running a study end to end: data, plan, execution, results table and report.

Example:
    >>> # robustlab.run_study("configs/quickstart.yaml") trains, evaluates and reports;
    >>> # see the README for the command-line equivalent, `robustlab run`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from robustlab import __version__
from robustlab.data.base import Dataset
from robustlab.data.datasets import load_dataset
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.seeding import derive_seed
from robustlab.study.attack_executor import attack_csv_rows, execute_attacks, make_attack_plan
from robustlab.study.config import StudyConfig, load_config, load_configs
from robustlab.study.executor import EvalOptions, GroupCallback, execute
from robustlab.study.minimal_noise_runner import plan_minimal_noise, run_minimal_noise
from robustlab.study.plan import Plan, make_plan
from robustlab.study.progress import RichProgress, SilentProgress
from robustlab.study.store import STORE_NAME, ResultsStore
from robustlab.train.cache import ModelCache

CSV_COLUMNS = [
    "model", "epochs", "defense", "degradation", "degradation_name", "severity_name",
    "severity", "params", "trial", "copies", "n", "errors", "accuracy", "psnr", "ssim",
]  # fmt: skip


@dataclass
class RunResult:
    """Where a finished study left its outputs."""

    run_dir: Path
    report_md: Path
    report_html: Path
    results_csv: Path
    cells_run: int
    cells_total: int
    seconds: float
    searches_run: int = 0  # minimal-noise jobs (model x method) computed by this run
    searches_total: int = 0


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
    raise ConfigError(
        f"study file {path} not found (give a path to a YAML file or a built-in name)"
    )


def prepare_dataset(config: StudyConfig, data_dir: str | os.PathLike[str] | None) -> Dataset:
    """Load the study's dataset with its parameters and apply its train / test limits.

    Streamed splits (:class:`~robustlab.data.streaming.StreamingSplit`) stay streamed: a limit
    keeps the first files, nothing is decoded here.
    """
    dataset = load_dataset(
        config.dataset.name,
        data_dir=str(data_dir) if data_dir else None,
        **config.dataset.params,
    )
    return replace(
        dataset,
        train=dataset.train.subset(config.dataset.train_limit),
        test=dataset.test.subset(config.dataset.test_limit),
    )


def data_fingerprint(dataset: Dataset) -> str:
    """One fingerprint for the exact train and test data of a run."""
    return str(derive_seed(dataset.train.fingerprint(), dataset.test.fingerprint()))


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_results_csv(
    plan: Plan, store: ResultsStore, path: Path, extra_rows: Iterable[Sequence[object]] = ()
) -> int:
    """Write the tidy results table, one row per planned and finished cell, in plan order.

    ``extra_rows`` (already in :data:`CSV_COLUMNS` order, e.g. the attack cells) follow.
    """
    rows = {r.key: r for r in store.cells([c.key for c in plan.cells])}
    epochs = {m.id: m.epochs for m in plan.models}  # None (an empty column) if pretrained
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for cell in plan.cells:
            r = rows.get(cell.key)
            if r is None:
                continue
            writer.writerow([
                r.model, epochs[r.model], r.defense, r.degradation, r.degradation_name,
                r.severity_name or "", "" if r.severity is None else repr(r.severity),
                json.dumps(r.params, sort_keys=True), r.trial, r.copies, r.n, r.errors,
                f"{r.accuracy:.6f}", _optional(r.psnr), _optional(r.ssim),
            ])  # fmt: skip
            written += 1
        for extra in extra_rows:
            writer.writerow(extra)
            written += 1
    os.replace(tmp, path)
    return written


def run_study(
    config: StudyConfig | str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    run_dir: str | os.PathLike[str] | None = None,
    cache: ModelCache | None = None,
    progress: bool = False,
    after_group: GroupCallback | None = None,
) -> RunResult:
    """Run a study: train or fetch models, evaluate every pending cell, write table and report.

    A rerun of the same study in the same run directory skips finished cells and cached models,
    so an interrupted run resumes where it stopped and ends with identical numbers.

    Args:
        config: a :class:`StudyConfig`, a path to a YAML study, a built-in name, or None for
            the quickstart study.
        data_dir: the data directory (else ``$ROBUSTLAB_DATA``, else the user cache).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        run_dir: where results go (else the study's ``output``, else ``runs/<name>``).
        cache: the model cache (default: ``$ROBUSTLAB_CACHE`` or the user cache).
        progress: show progress bars on stderr.
        after_group: called after each finished group (for tests that interrupt a run).
    """
    from robustlab.report.build import build_report

    began = time.perf_counter()
    if not isinstance(config, StudyConfig):
        config = load_config(resolve_config_path(config))
    target = config.run_dir(run_dir)
    target.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    dataset = prepare_dataset(config, data_dir)
    fingerprint = data_fingerprint(dataset)
    plan = make_plan(config, fingerprint)
    attack_plan = make_attack_plan(config, fingerprint, plan.models)
    model_cache = cache or ModelCache()

    store = ResultsStore(target / STORE_NAME)
    try:
        store.set_meta("config", config.model_dump(mode="json"))
        store.set_meta("data_fingerprint", fingerprint)
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
                "threads": torch.get_num_threads(),
            },
        )
        reporter = RichProgress() if progress else SilentProgress()
        with reporter:
            ran = execute(
                plan,
                dataset,
                store,
                device=torch_device,
                cache=model_cache,
                options=EvalOptions(
                    batch_size=config.batch_size,
                    quality=config.quality_metrics,
                    record_copies=config.records,
                    examples=config.examples,
                ),
                progress=reporter,
                after_group=after_group,
            )
            ran += execute_attacks(
                attack_plan,
                dataset,
                store,
                device=torch_device,
                cache=model_cache,
                batch_size=config.batch_size,
                progress=reporter,
            )
            searches_run = run_minimal_noise(
                config,
                plan.models,
                dataset,
                store,
                data_fingerprint=fingerprint,
                device=torch_device,
                cache=model_cache,
                progress=reporter,
            )
        results_csv = target / "results.csv"
        write_results_csv(plan, store, results_csv, attack_csv_rows(attack_plan, store))
        (target / "models.json").write_text(json.dumps(store.models(), indent=2))
        (target / "config.yaml").write_text(config_yaml(config))
        report_md, report_html = build_report(target)
    finally:
        store.close()
    return RunResult(
        run_dir=target,
        report_md=report_md,
        report_html=report_html,
        results_csv=results_csv,
        cells_run=ran,
        cells_total=len(plan.cells) + len(attack_plan.cells),
        seconds=time.perf_counter() - began,
        searches_run=searches_run,
        searches_total=len(plan_minimal_noise(config, fingerprint, plan.models)),
    )


def run_studies(
    path_or_name: str | os.PathLike[str] | None = None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[RunResult]:
    """Run every study of a (possibly multi-document) study file, in order.

    With several studies, ``run_dir`` is a parent folder: each study gets ``run_dir/<name>``.
    Other keyword arguments are those of :func:`run_study`.
    """
    configs = load_configs(resolve_config_path(path_or_name))
    results = []
    for config in configs:
        target = run_dir
        if run_dir is not None and len(configs) > 1:
            target = Path(run_dir) / config.name
        results.append(run_study(config, run_dir=target, **options))
    return results


def config_yaml(config: StudyConfig) -> str:
    """The validated configuration as YAML (defaults filled in), for the run directory."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
