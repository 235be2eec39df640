"""The certified-robustness part of a study: randomised smoothing for every model and sigma.

A study's ``certify:`` section names the noise levels ``sigma``, the sampling budget (``n0``
selection and ``n`` estimation draws, failure probability ``alpha``), how many leading test
images to certify and the radii to report at. For every model (bare, no input defence) and
sigma one *job* runs :func:`robustlab.certify.certify` on those images (the model alone, or
behind one of the study's defences named in ``certify.defenses``: smoothing ``classifier(
defence(x + noise))`` is Salman et al.'s denoised smoothing when the defence is a denoiser) and
commits, in one
transaction, a cell of kind ``certify`` (accuracy of the smoothed classifier at radius 0,
abstentions counted wrong) and its per-image records (label, prediction, radius, ``p_lower``,
counts) in the store's ``records`` table. A job's key hashes everything its numbers depend on
(data, model, images, sigma, ``n0``, ``n``, alpha, batch size, seed, a code version); a rerun
skips finished keys, so a killed run loses at most the job in flight.

The noise generator of a job is seeded from ``(study seed, "certify", sigma)`` alone: every
model sees exactly the same noise at a given sigma (a paired comparison). ``certify.csv`` has
one row per model, sigma and image.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1, 2]}],
    ...     "certify": {"sigma": [0.25, 0.5], "images": 10}})
    >>> plan = plan_certify(cfg, "abc", plan_models(cfg))
    >>> [job.id for job in plan.jobs]
    ['cnn-e1/sigma=0.25', 'cnn-e1/sigma=0.5', 'cnn-e2/sigma=0.25', 'cnn-e2/sigma=0.5']
    >>> plan.radii
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.certify import Certificate, certify
from robustlab.data.base import Dataset
from robustlab.defend import defended
from robustlab.seeding import derive_seed, make_generator
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.config import StudyConfig
from robustlab.study.defenses import build_defense
from robustlab.study.plan import DefenseSetting, PlannedModel, dataset_key, defense_settings
from robustlab.study.progress import SilentProgress
from robustlab.study.store import CellRow, ResultsStore

KIND = "certify"  # the cells' kind in the store and in results.csv
NO_DEFENSE = DefenseSetting("none", "none", {})
CSV_NAME = "certify.csv"
CODE_VERSION = 1  # bump when a change to the sampling changes what a job produces
SETTING = "certified"  # the cells' setting (results.csv's degradation column)
SETTING_NAME = "randomised_smoothing"
CSV_COLUMNS = [
    "model", "defense", "sigma", "index", "label", "prediction", "radius", "p_lower", "counts",
]  # fmt: skip


@dataclass(frozen=True)
class CertifyJob:
    """One model x sigma of the study's ``certify`` section."""

    model: PlannedModel
    sigma: float
    key: str
    defense: DefenseSetting = NO_DEFENSE

    def to_json(self) -> list[Any]:
        """``[model id, sigma, key, defence]``, as stored with the resolved plan."""
        return [self.model.id, self.sigma, self.key, self.defense.to_json()]

    @classmethod
    def from_json(cls, data: list[Any], models: list[PlannedModel]) -> CertifyJob:
        """A stored job."""
        model, sigma, key, *rest = data
        known = {m.id: m for m in models}
        defense = DefenseSetting.from_json(rest[0], known) if rest else NO_DEFENSE
        return cls(next(m for m in models if m.id == model), float(sigma), key, defense)

    @property
    def id(self) -> str:
        """``<model id>[/<defence>]/sigma=<sigma>``, the job's name in logs."""
        behind = "" if self.defense.name == "none" else f"/{self.defense.label}"
        return f"{self.model.id}{behind}/sigma={self.sigma:g}"


@dataclass
class CertifyPlan:
    """Every job of the section and what the results are read with (no config needed)."""

    jobs: list[CertifyJob]
    radii: list[float]  # the report radii
    n0: int
    n: int
    alpha: float
    images: int
    batch_size: int
    seed: int
    largest: dict[float, float] = field(default_factory=dict)  # sigma -> largest radius

    def params(self, sigma: float) -> dict[str, Any]:
        """The smoothing parameters of the cells at ``sigma`` (``params`` in results.csv)."""
        return {"sigma": sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha}

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON."""
        return {
            "jobs": [job.to_json() for job in self.jobs],
            "radii": self.radii,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "images": self.images,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "largest": [[s, r] for s, r in self.largest.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], models: list[PlannedModel]) -> CertifyPlan:
        """The stored plan."""
        return cls(
            jobs=[CertifyJob.from_json(job, models) for job in data["jobs"]],
            radii=[float(r) for r in data["radii"]],
            n0=int(data["n0"]),
            n=int(data["n"]),
            alpha=float(data["alpha"]),
            images=int(data["images"]),
            batch_size=int(data["batch_size"]),
            seed=int(data["seed"]),
            largest={float(s): float(r) for s, r in data["largest"]},
        )


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def plan_certify(
    config: StudyConfig, data_fingerprint: str, models: list[PlannedModel]
) -> CertifyPlan:
    """Every model x sigma job of ``config``'s ``certify`` section (none without one)."""
    section = config.certify
    if section is None:
        return CertifyPlan([], [], 0, 0, 0.0, 0, 0, config.seed)
    jobs = []
    settings = {d.label: d for d in defense_settings(config)}
    for model, label, sigma in itertools.product(models, section.defenses, section.sigma):
        defense = settings.get(label, NO_DEFENSE)
        # The bare model's key has no defence entry: keys from before defences stay valid.
        behind = {} if defense.name == "none" else {"defense": defense.key()}
        key = _digest(
            {
                **behind,
                "kind": KIND,
                "dataset": dataset_key(config.dataset),
                "data": data_fingerprint,
                "model": model.key(),
                "images": section.images,
                "sigma": sigma,
                "n0": section.n0,
                "n": section.n,
                "alpha": section.alpha,
                "batch_size": section.batch_size,
                "seed": config.seed,
                "code": CODE_VERSION,
            }
        )
        jobs.append(CertifyJob(model, float(sigma), key, defense))
    return CertifyPlan(
        jobs=jobs,
        radii=section.report_radii(),
        n0=section.n0,
        n=section.n,
        alpha=section.alpha,
        images=section.images,
        batch_size=section.batch_size,
        seed=config.seed,
        largest={float(s): section.largest_radius(s) for s in section.sigma},
    )


def certificate_from_records(
    records: dict[str, np.ndarray], plan: CertifyPlan, sigma: float
) -> tuple[Certificate, np.ndarray]:
    """A finished job's :class:`Certificate` and labels, from its stored records."""
    cert = Certificate(
        prediction=records["prediction"].astype(np.int64),
        radius=records["radius"].astype(np.float64),
        p_lower=records["p_lower"].astype(np.float64),
        counts=records["counts"].astype(np.int64),
        n0=plan.n0,
        n=plan.n,
        alpha=plan.alpha,
        sigma=sigma,
    )
    return cert, records["label"].astype(np.int64)


def finished_certificates(
    plan: CertifyPlan, store: ResultsStore
) -> dict[str, tuple[CertifyJob, Certificate, np.ndarray]]:
    """``job key -> (job, certificate, labels)`` for every finished job, in plan order."""
    finished = store.finished_keys()
    out = {}
    for job in plan.jobs:
        if job.key not in finished or job.key in out:
            continue
        records = store.records(job.key)
        if records is None:
            continue
        cert, labels = certificate_from_records(records, plan, job.sigma)
        out[job.key] = (job, cert, labels)
    return out


def certified_hits(cert: Certificate, labels: np.ndarray, radii: list[float]) -> np.ndarray:
    """How many images are certified correct at each radius (int64, one per radius).

    The counts behind :meth:`Certificate.certified_accuracy`: correct (never an abstention)
    and certified with a radius of at least ``r``.
    """
    correct = (cert.prediction == labels) & (cert.prediction >= 0)
    r = np.asarray(radii, dtype=np.float64)
    hits = correct[None, :] & (cert.radius[None, :] >= r[:, None])
    return np.asarray(hits.sum(axis=1), dtype=np.int64)


def median_correct_radius(cert: Certificate, labels: np.ndarray) -> float | None:
    """The median certified radius over the images certified correct; None without any."""
    correct = (cert.prediction == labels) & (cert.prediction >= 0)
    return float(np.median(cert.radius[correct])) if correct.any() else None


def _cell(job: CertifyJob, plan: CertifyPlan, cert: Certificate, labels: np.ndarray,
          seconds: float) -> CellRow:  # fmt: skip
    """The job's cell: the smoothed classifier's accuracy at radius 0 (abstentions wrong)."""
    correct = int(certified_hits(cert, labels, [0.0])[0])
    median = median_correct_radius(cert, labels)
    return CellRow(
        key=job.key,
        kind=KIND,
        model=job.model.id,
        defense=job.defense.label,
        setting=SETTING,
        setting_name=SETTING_NAME,
        params=plan.params(job.sigma),
        severity_name="sigma",
        severity=job.sigma,
        trial=0,
        n=len(labels),
        errors=len(labels) - correct,
        accuracy=correct / len(labels) if len(labels) else 0.0,
        metrics={
            "seconds": seconds,
            "copies": plan.n0 + plan.n,
            "abstained": int((cert.prediction < 0).sum()),
            "median_radius": median,
            "largest_radius": plan.largest.get(job.sigma),
        },
    )


def run_certify(
    plan: CertifyPlan,
    dataset: Dataset,
    store: ResultsStore,
    *,
    provider: ArtefactProvider,
    progress: SilentProgress | None = None,
    after_job: Callable[[CertifyJob], None] | None = None,
) -> int:
    """Run every pending job of ``plan`` (:func:`plan_certify`); returns how many ran.

    Each job's cell and records are committed together as soon as it finishes;
    ``certify.csv`` beside the store is rewritten from every finished job of the plan.

    Args:
        plan: the section's jobs.
        dataset: the study's data (the first ``plan.images`` test images are certified).
        store: the results store of the run.
        provider: serves each model, on its device, where the noise is drawn too.
        progress: progress reporter (noisy samples evaluated).
        after_job: called after each finished job (tests interrupt a run with it).
    """
    progress = progress or SilentProgress()
    device = provider.device
    finished = store.finished_keys()
    pending = list({job.key: job for job in plan.jobs if job.key not in finished}.values())
    if pending:
        images = dataset.test.subset(plan.images)
        x, y = next(images.batches(len(images), device))
        labels = y.cpu().numpy().astype(np.int64)
        per_job = len(x) * (plan.n0 + plan.n)
        task = progress.start("certify (noisy samples)", len(pending) * per_job)
        for job in pending:
            model = provider.provide(job.model)
            if job.defense.name != "none":
                front = build_defense(job.defense, provider).to(device)
                model = defended(model, front).eval()
            generator = make_generator(derive_seed(plan.seed, KIND, job.sigma), device)
            seen = [0]

            def advance(done: int, seen: list[int] = seen) -> None:
                progress.advance(task, done - seen[0])
                seen[0] = done

            began = time.perf_counter()
            cert = certify(
                model,
                x,
                sigma=job.sigma,
                n0=plan.n0,
                n=plan.n,
                alpha=plan.alpha,
                batch_size=plan.batch_size,
                generator=generator,
                num_classes=dataset.num_classes,
                progress=advance,
            )
            seconds = time.perf_counter() - began
            records = {
                "label": labels,
                "prediction": cert.prediction,
                "radius": cert.radius,
                "p_lower": cert.p_lower,
                "counts": cert.counts,
            }
            row = _cell(job, plan, cert, labels, seconds)
            store.add_cells([row], {job.key: records})
            advance(per_job)
            median = row.metrics["median_radius"]
            progress.log(
                f"certify {job.id}: smoothed accuracy {row.accuracy:.1%}, abstained "
                f"{row.metrics['abstained'] / max(len(x), 1):.1%}, median radius (correct) "
                f"{'–' if median is None else f'{median:.3f}'}, {seconds:.1f} s"
            )
            if after_job is not None:
                after_job(job)
        progress.finish(task)
    write_certify_csv(plan, store, store.path.parent / CSV_NAME)
    return len(pending)


def write_certify_csv(plan: CertifyPlan, store: ResultsStore, path: Path) -> int:
    """One row per finished job and image, written atomically; returns the number of rows."""
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for job, cert, labels in finished_certificates(plan, store).values():
            for i in range(len(labels)):
                writer.writerow([
                    job.model.id, job.defense.label, f"{job.sigma:g}", i, int(labels[i]),
                    int(cert.prediction[i]),
                    f"{cert.radius[i]:.6f}", f"{cert.p_lower[i]:.10g}", int(cert.counts[i]),
                ])  # fmt: skip
                written += 1
    os.replace(tmp, path)
    return written


def certify_csv_rows(plan: CertifyPlan, store: ResultsStore) -> list[dict[str, Any]]:
    """Rows of ``results.csv``: one per finished model x sigma x report radius."""
    epochs = {job.model.id: job.model.epochs for job in plan.jobs}
    rows = []
    for job, cert, labels in finished_certificates(plan, store).values():
        hits = certified_hits(cert, labels, plan.radii)
        count = len(labels)
        for radius, hit in zip(plan.radii, hits.tolist(), strict=True):
            rows.append(
                {
                    "kind": KIND,
                    "model": job.model.id,
                    "epochs": "" if epochs[job.model.id] is None else epochs[job.model.id],
                    "defense": job.defense.label,
                    "protocol": "",
                    "degradation": SETTING,
                    "degradation_name": SETTING_NAME,
                    "severity_name": "radius",
                    "severity": repr(float(radius)),
                    "params": json.dumps(plan.params(job.sigma), sort_keys=True),
                    "trial": 0,
                    "copies": plan.n0 + plan.n,
                    "n": count,
                    "errors": count - hit,
                    "accuracy": f"{hit / count:.6f}" if count else "",
                    "psnr": "",
                    "ssim": "",
                }
            )
    return rows
