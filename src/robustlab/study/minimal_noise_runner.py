"""The minimal-noise part of a study: aghdam2016's search (and Szegedy's) for every model.

A study's ``minimal_noise:`` section names how many leading test images to search on, which
methods (``ga``, ``szegedy``) and their parameters. For every model and method one *job* runs
:func:`robustlab.attack.minimal_noise.minimal_noise_search` on those images and writes
``minimal_noise/<model>--<method>.npz`` in the run directory (atomically: temporary file, then
rename), then records the job's key, file and summary under the store's ``minimal_noise`` meta
entry. A job's key hashes everything its numbers depend on (model, data, images, method,
parameters, seed); a rerun skips jobs whose key is recorded and whose file exists, so a killed
run loses at most the job in flight. ``minimal_noise.csv`` has one row per model, method and
image.

Both methods of one model see the same images; the genetic algorithm's generator is seeded
from ``(study seed, "minimal_noise", method)`` alone, so every model starts from the same
initial populations.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import make_plan
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1, 2]}],
    ...     "minimal_noise": {"images": 10, "ga": {"generations": 20}}})
    >>> jobs = plan_minimal_noise(cfg, "abc", make_plan(cfg, "abc").models)
    >>> [job.id for job in jobs]
    ['cnn-e1/ga', 'cnn-e1/szegedy', 'cnn-e2/ga', 'cnn-e2/szegedy']
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.attack import create_attack
from robustlab.attack.minimal_noise import (
    METHODS,
    GeneticParams,
    MinimalNoiseResult,
    SzegedyParams,
    make_params,
    minimal_noise_by_attack,
    minimal_noise_search,
)
from robustlab.data.base import Dataset
from robustlab.seeding import derive_seed, make_generator
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.config import StudyConfig
from robustlab.study.plan import PlannedModel, dataset_key
from robustlab.study.progress import SilentProgress
from robustlab.study.store import ResultsStore
from robustlab.tensors import to_uint8

FOLDER = "minimal_noise"  # inside the run directory
CSV_NAME = "minimal_noise.csv"
META_KEY = "minimal_noise"
CODE_VERSION = 1  # bump when a change to the search changes what a job produces
CSV_COLUMNS = [
    "model", "method", "index", "label", "clean_class", "new_class", "success", "norm_l2",
    "psnr", "margin", "logit_margin", "forward_passes", "backward_passes", "iterations",
    "seconds",
]  # fmt: skip


@dataclass(frozen=True)
class MinimalNoiseJob:
    """One model x method of the study's minimal-noise section."""

    model: PlannedModel
    method: str
    key: str
    params: dict[str, Any]

    def to_json(self) -> list[Any]:
        """``[model id, method, key, params]``, as stored with the resolved plan."""
        return [self.model.id, self.method, self.key, self.params]

    @classmethod
    def from_json(cls, data: list[Any], models: list[PlannedModel]) -> MinimalNoiseJob:
        """A stored job."""
        model, method, key, params = data
        return cls(next(m for m in models if m.id == model), method, key, params)

    @property
    def id(self) -> str:
        """``<model id>/<method>``, the job's name in the store."""
        return f"{self.model.id}/{self.method}"

    @property
    def file(self) -> str:
        """The result file, relative to the run directory."""
        return f"{FOLDER}/{self.model.id}--{self.method}.npz"


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def method_params(config: StudyConfig, method: str) -> dict[str, Any]:
    """The full parameters (defaults filled in) of ``method`` in ``config``'s section."""
    section = config.minimal_noise
    assert section is not None
    if method == "ga":
        return dataclasses.asdict(make_params(GeneticParams, section.ga))
    if method == "szegedy":
        return dataclasses.asdict(make_params(SzegedyParams, section.szegedy))
    return create_attack(method, **section.params.get(method, {})).params()


def plan_minimal_noise(
    config: StudyConfig, data_fingerprint: str, models: list[PlannedModel]
) -> list[MinimalNoiseJob]:
    """Every model x method job of ``config``'s ``minimal_noise`` section (none without one)."""
    section = config.minimal_noise
    if section is None:
        return []
    jobs = []
    for model in models:
        for method in section.methods:
            params = method_params(config, method)
            key = _digest(
                {
                    "dataset": dataset_key(config.dataset),
                    "data": data_fingerprint,
                    "model": model.key(),
                    "images": section.images,
                    "method": method,
                    "params": params,
                    "seed": config.seed,
                    "code": CODE_VERSION,
                }
            )
            jobs.append(MinimalNoiseJob(model, method, key, params))
    return jobs


def _save(path: Path, result: MinimalNoiseResult, clean: torch.Tensor) -> None:
    """Write ``result`` and the clean images as a compressed ``.npz``, atomically."""
    arrays = result.arrays()
    arrays["noise"] = arrays["noise"].astype(np.float16)  # for figures; norms are exact
    arrays["clean"] = to_uint8(clean).cpu().numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def load_job(run_dir: Path, entry: dict[str, Any]) -> tuple[MinimalNoiseResult, np.ndarray]:
    """A finished job's result and its clean ``uint8`` images, from the store's meta entry."""
    with np.load(run_dir / entry["file"]) as data:
        arrays = {name: data[name] for name in data.files}
    clean = arrays.pop("clean")
    return MinimalNoiseResult.from_arrays(entry["method"], arrays, entry.get("params")), clean


def finished_jobs(store: ResultsStore) -> dict[str, dict[str, Any]]:
    """``job id -> {key, file, model, method, params, summary}`` of every recorded job."""
    return dict(store.get_meta(META_KEY, {}))


def _is_done(job: MinimalNoiseJob, done: dict[str, dict[str, Any]], run_dir: Path) -> bool:
    entry = done.get(job.id)
    return entry is not None and entry["key"] == job.key and (run_dir / job.file).is_file()


def run_minimal_noise(
    config: StudyConfig,
    jobs: list[MinimalNoiseJob],
    dataset: Dataset,
    store: ResultsStore,
    *,
    provider: ArtefactProvider,
    progress: SilentProgress | None = None,
) -> int:
    """Run every pending job of ``jobs`` (:func:`plan_minimal_noise`); returns how many ran.

    Results go beside the store (``store.path.parent``); ``minimal_noise.csv`` is rewritten
    from every finished job of the section.
    """
    section = config.minimal_noise
    if section is None:
        return 0
    progress = progress or SilentProgress()
    device = provider.device
    run_dir = store.path.parent
    done = finished_jobs(store)
    pending = [job for job in jobs if not _is_done(job, done, run_dir)]
    if pending:
        images = dataset.test.subset(section.images)
        x, y = next(images.batches(len(images), device))
        task = progress.start("minimal noise", len(pending) * len(x))
        for job in pending:
            generator = make_generator(derive_seed(config.seed, META_KEY, job.method), device)
            if job.method in METHODS:
                result = minimal_noise_search(
                    provider.provide(job.model),
                    x,
                    y,
                    method=job.method,  # type: ignore[arg-type]
                    generator=generator,
                    ga=GeneticParams(**job.params) if job.method == "ga" else None,
                    szegedy=SzegedyParams(**job.params) if job.method == "szegedy" else None,
                    num_classes=dataset.num_classes,
                    max_batch=section.max_batch,
                )
            else:  # any other minimum-norm attack (fmn)
                result = minimal_noise_by_attack(
                    provider.provide(job.model),
                    x,
                    y,
                    create_attack(job.method, **job.params),
                    generator=generator,
                    num_classes=dataset.num_classes,
                    max_batch=section.max_batch,
                )
            _save(run_dir / job.file, result, x)
            summary = result.summary()
            done[job.id] = {
                "key": job.key,
                "file": job.file,
                "model": job.model.id,
                "method": job.method,
                "params": job.params,
                "summary": summary,
            }
            store.set_meta(META_KEY, done)
            progress.advance(task, len(x))
            progress.log(
                f"minimal noise {job.id}: success {summary['success_rate']:.0%}, mean L2 "
                f"{summary['mean_norm']:.3f}, median PSNR {summary['median_psnr']:.1f} dB, "
                f"{summary['seconds_per_image']:.3f} s/image"
            )
        progress.finish(task)
    write_minimal_noise_csv(jobs, store, run_dir / CSV_NAME)
    return len(pending)


def write_minimal_noise_csv(jobs: list[MinimalNoiseJob], store: ResultsStore, path: Path) -> int:
    """One row per finished job and image; returns the number of rows."""
    done = finished_jobs(store)
    run_dir = store.path.parent
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for job in jobs:
            if not _is_done(job, done, run_dir):
                continue
            result, _ = load_job(run_dir, done[job.id])
            for i in range(len(result)):
                writer.writerow([
                    job.model.id, job.method, i, int(result.labels[i]),
                    int(result.clean_class[i]), int(result.new_class[i]),
                    int(result.success[i]), f"{result.norm[i]:.6f}", f"{result.psnr[i]:.4f}",
                    f"{result.margin[i]:.6g}", f"{result.logit_margin[i]:.6g}",
                    int(result.forward_passes[i]), int(result.backward_passes[i]),
                    int(result.iterations[i]), f"{result.seconds[i]:.6f}",
                ])  # fmt: skip
                written += 1
    os.replace(tmp, path)
    return written
