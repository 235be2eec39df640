"""The degradation sweep: every model x defence x degradation setting x trial.

The engine is :mod:`robustlab.study.executor` (groups of cells sharing model, setting and
trial, each test batch degraded once and sent through every defence); the report sections are
:mod:`robustlab.report.degradation_sections`.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    ...     "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1]}}]})
    >>> part = DegradationPart()
    >>> plan = part.plan(cfg, "fp", plan_models(cfg))
    >>> part.size(plan), part.size(part.decode(part.encode(plan), plan.models))
    (2, 2)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from robustlab.report.degradation_sections import degradation_blocks, headlines, reference_blocks
from robustlab.report.document import Block
from robustlab.report.leaderboard import LeaderboardScores, degradation_scores
from robustlab.report.summary import summarise
from robustlab.study.config import StudyConfig
from robustlab.study.executor import EvalOptions, execute
from robustlab.study.parts.base import (
    PartRun,
    ReportContext,
    Shard,
    StudyPart,
    planned_attack_keys,
    register_part,
)
from robustlab.study.plan import Plan, PlannedModel, make_plan
from robustlab.study.store import ResultsStore


@register_part
class DegradationPart(StudyPart[Plan]):
    """Clean and degraded accuracy of every model behind every input defence."""

    name = "degradations"
    order = 10

    def plan(self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]) -> Plan:
        """The sweep's groups and cells (the clean setting at least)."""
        return make_plan(config, fingerprint, models)

    def encode(self, plan: Plan) -> dict[str, Any]:
        """Settings, defences and cells as JSON."""
        return plan.to_json()

    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> Plan:
        """The stored sweep."""
        return Plan.from_json(data, models)

    def size(self, plan: Plan) -> int:
        """Number of cells."""
        return len(plan.cells)

    def done(self, plan: Plan, store: ResultsStore) -> int:
        """Number of finished cells."""
        finished = store.finished_keys()
        return sum(c.key in finished for c in plan.cells)

    def run(self, plan: Plan, context: PartRun) -> int:
        """Evaluate every group with unfinished cells."""
        config = context.config
        return execute(
            plan,
            context.dataset,
            context.store,
            provider=context.provider,
            options=EvalOptions(
                batch_size=config.batch_size,
                quality=config.quality_metrics,
                record_copies=config.records,
                examples=config.examples,
            ),
            progress=context.progress,
            after_group=context.after_group,
        )

    def shards(self, plan: Plan) -> list[Shard[Plan]]:
        """One shard per group (model x setting x trial: the executor's unit of commit)."""
        return [
            Shard(
                replace(plan, groups=[group], cells=list(group.cells)),
                (group.model,),
                f"{group.model.id} {group.setting.label} trial {group.trial}",
            )
            for group in plan.groups
        ]

    def csv_rows(self, plan: Plan, store: ResultsStore) -> list[dict[str, Any]]:
        """One row per finished cell, in plan order."""
        rows = {r.key: r for r in store.cells([c.key for c in plan.cells])}
        epochs = {m.id: m.epochs for m in plan.models}
        return [rows[c.key].csv_row(epochs[c.model.id]) for c in plan.cells if c.key in rows]

    def findings(self, plan: Plan, context: ReportContext) -> list[str]:
        """The best defence at each degradation's most damaging setting."""
        return headlines(plan, summarise(context.store.cells([c.key for c in plan.cells])))

    def lead_blocks(self, plan: Plan, context: ReportContext) -> list[Block]:
        """The paper's numbers beside ours, when the study names a reference."""
        rows = context.store.cells([c.key for c in plan.cells])
        return reference_blocks(
            context.config,
            summarise(rows),
            rows,
            context.classes,
            context.store.models(),
            attack_rows=context.store.cells(planned_attack_keys(context)),
        )

    def leaderboard(self, plan: Plan, store: ResultsStore) -> LeaderboardScores:
        """Clean accuracy and accuracy at each degradation's strongest level, per fix."""
        rows = store.cells([c.key for c in plan.cells])
        return degradation_scores(rows, [d.label for d in plan.defenses])

    def report_blocks(self, plan: Plan, context: ReportContext) -> list[Block]:
        """Error tables, improvement, mCE, quality, per-class, curves, scatters, examples."""
        return degradation_blocks(plan, context.store, context.config, context.classes)
