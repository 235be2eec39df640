"""The certified-robustness part: randomised smoothing (Cohen et al. 2019) for every model.

The engine is :mod:`robustlab.study.certify_runner` (one resumable job per model and sigma,
cells of kind ``certify`` with per-image records, ``certify.csv``); the report section is
:mod:`robustlab.report.certify_sections`.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    ...     "certify": {"sigma": [0.25, 0.5], "images": 10, "radii": [0, 0.5, 1.0]}})
    >>> part = CertifyPart()
    >>> plan = part.plan(cfg, "fp", plan_models(cfg))
    >>> [job.id for job in plan.jobs], plan.radii
    (['cnn-e1/sigma=0.25', 'cnn-e1/sigma=0.5'], [0.0, 0.5, 1.0])
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from robustlab.certify.radii import representative_radius
from robustlab.report.certify_sections import certify_blocks, certify_findings
from robustlab.report.document import Block
from robustlab.report.leaderboard import LeaderboardScores
from robustlab.study.certify_runner import (
    CertifyPlan,
    certify_csv_rows,
    finished_certificates,
    plan_certify,
    run_certify,
)
from robustlab.study.config import StudyConfig
from robustlab.study.parts.base import PartRun, ReportContext, Shard, StudyPart, register_part
from robustlab.study.plan import PlannedModel
from robustlab.study.store import ResultsStore


@register_part
class CertifyPart(StudyPart[CertifyPlan]):
    """Certified L2 robustness of every model's smoothed classifier, per noise level."""

    name = "certify"
    order = 40

    def plan(
        self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]
    ) -> CertifyPlan | None:
        """One job per model and sigma, or None without ``certify:``."""
        if config.certify is None:
            return None
        return plan_certify(config, fingerprint, models)

    def encode(self, plan: CertifyPlan) -> dict[str, Any]:
        """The jobs and sampling settings as JSON."""
        return plan.to_json()

    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> CertifyPlan:
        """The stored plan."""
        return CertifyPlan.from_json(data, models)

    def size(self, plan: CertifyPlan) -> int:
        """Number of jobs."""
        return len({job.key for job in plan.jobs})

    def done(self, plan: CertifyPlan, store: ResultsStore) -> int:
        """Number of finished jobs."""
        finished = store.finished_keys()
        return len({job.key for job in plan.jobs if job.key in finished})

    def run(self, plan: CertifyPlan, context: PartRun) -> int:
        """Certify with every unfinished job; rewrites ``certify.csv``."""
        return run_certify(
            plan,
            context.dataset,
            context.store,
            provider=context.provider,
            progress=context.progress,
            after_job=context.after_group,
        )

    def shards(self, plan: CertifyPlan) -> list[Shard[CertifyPlan]]:
        """One shard per certification job (model x defence x sigma)."""
        jobs = {job.key: job for job in plan.jobs}.values()
        return [Shard(replace(plan, jobs=[job]), (job.model,), job.key) for job in jobs]

    def csv_rows(self, plan: CertifyPlan, store: ResultsStore) -> list[dict[str, Any]]:
        """One row per finished model x sigma x report radius (kind ``certify``)."""
        return certify_csv_rows(plan, store)

    def findings(self, plan: CertifyPlan, context: ReportContext) -> list[str]:
        """The best certified accuracy at the representative radius."""
        return certify_findings(plan, context.store)

    def leaderboard(self, plan: CertifyPlan, store: ResultsStore) -> LeaderboardScores:
        """Per model (no defence): certified accuracy at one radius, the best over sigmas.

        The radius is :func:`~robustlab.certify.radii.representative_radius` of the report
        radii. The number belongs to the model's smoothed classifier (a guarantee that holds
        for every L2 perturbation below the radius), another classifier than the model ranked,
        so it is shown beside the worst case and not counted in it.
        """
        scores = LeaderboardScores(
            defenses=list(dict.fromkeys(job.defense.label for job in plan.jobs))
        )
        finished = finished_certificates(plan, store)
        radius = representative_radius(plan.radii)
        best: dict[tuple[str, str], float] = {}
        for job, cert, labels in finished.values():
            if not len(labels):
                continue
            pair = (job.model.id, job.defense.label)
            value = float(cert.certified_accuracy(labels, [radius])[0])
            best[pair] = max(best.get(pair, 0.0), value)
        if best:
            scores.shown[f"smoothed, certified L2 r={radius:g}"] = best
        return scores

    def report_blocks(self, plan: CertifyPlan, context: ReportContext) -> list[Block]:
        """The certified-robustness section."""
        return certify_blocks(plan, context.store, context.models)
