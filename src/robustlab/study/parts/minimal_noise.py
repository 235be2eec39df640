"""The minimal-noise part: aghdam2016's search (and Szegedy's) for every model.

The engine is :mod:`robustlab.study.minimal_noise_runner` (one resumable job per model and
method, results in ``minimal_noise/*.npz`` and ``minimal_noise.csv``); the report section is
:mod:`robustlab.report.minimal_noise_sections`.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    ...     "minimal_noise": {"images": 10}})
    >>> part = MinimalNoisePart()
    >>> [job.id for job in part.plan(cfg, "fp", plan_models(cfg))]
    ['cnn-e1/ga', 'cnn-e1/szegedy']
"""

from __future__ import annotations

from typing import Any

from robustlab.report.document import Block
from robustlab.report.minimal_noise_sections import minimal_noise_blocks
from robustlab.study.config import StudyConfig
from robustlab.study.minimal_noise_runner import (
    MinimalNoiseJob,
    finished_jobs,
    plan_minimal_noise,
    run_minimal_noise,
)
from robustlab.study.parts.base import PartRun, ReportContext, Shard, StudyPart, register_part
from robustlab.study.plan import PlannedModel
from robustlab.study.store import ResultsStore

Jobs = list[MinimalNoiseJob]


@register_part
class MinimalNoisePart(StudyPart[Jobs]):
    """The smallest noise that flips each image's prediction, per model and method."""

    name = "minimal_noise"
    order = 30

    def plan(
        self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]
    ) -> Jobs | None:
        """One job per model and method, or None without ``minimal_noise:``."""
        if config.minimal_noise is None:
            return None
        return plan_minimal_noise(config, fingerprint, models)

    def encode(self, plan: Jobs) -> dict[str, Any]:
        """The jobs as JSON."""
        return {"jobs": [job.to_json() for job in plan]}

    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> Jobs:
        """The stored jobs."""
        return [MinimalNoiseJob.from_json(job, models) for job in data["jobs"]]

    def size(self, plan: Jobs) -> int:
        """Number of jobs."""
        return len(plan)

    def done(self, plan: Jobs, store: ResultsStore) -> int:
        """Number of finished jobs (recorded with the same key, result file present)."""
        finished = finished_jobs(store)
        run_dir = store.path.parent
        return sum(
            job.id in finished
            and finished[job.id]["key"] == job.key
            and (run_dir / job.file).is_file()
            for job in plan
        )

    def run(self, plan: Jobs, context: PartRun) -> int:
        """Run the unfinished jobs; rewrites ``minimal_noise.csv``."""
        return run_minimal_noise(
            context.config,
            plan,
            context.dataset,
            context.store,
            provider=context.provider,
            progress=context.progress,
        )

    def shards(self, plan: Jobs) -> list[Shard[Jobs]]:
        """One shard per search (model x method)."""
        return [Shard([job], (job.model,), job.key) for job in plan]

    def report_blocks(self, plan: Jobs, context: ReportContext) -> list[Block]:
        """The minimal-noise section."""
        return minimal_noise_blocks(
            context.store, context.config, plan, context.models, context.classes
        )
