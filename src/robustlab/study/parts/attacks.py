"""The attack part: every model x defence x attack setting, oblivious and adaptive.

The engine is :mod:`robustlab.study.attack_executor`; the report section is
:mod:`robustlab.report.attack_sections`.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    ...     "defenses": ["none", "median"],
    ...     "attacks": [{"name": "pgd", "grid": {"eps": [0.1, 0.3]}}]})
    >>> part = AttackPart()
    >>> plan = part.plan(cfg, "fp", plan_models(cfg))
    >>> part.size(plan), plan.methods
    (8, ['median: adaptive attacks use exact gradients'])
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from robustlab.report.attack_sections import attack_blocks
from robustlab.report.document import Block
from robustlab.report.leaderboard import LeaderboardScores
from robustlab.study.attack_executor import (
    AttackPlan,
    attack_csv_rows,
    execute_attacks,
    make_attack_plan,
    worst_case,
)
from robustlab.study.config import StudyConfig
from robustlab.study.parts.base import PartRun, ReportContext, Shard, StudyPart, register_part
from robustlab.study.plan import PlannedModel
from robustlab.study.store import ResultsStore


@register_part
class AttackPart(StudyPart[AttackPlan]):
    """Robust accuracy under the study's attacks, oblivious and adaptive, and the worst case."""

    name = "attacks"
    order = 20

    def plan(
        self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]
    ) -> AttackPlan | None:
        """The attack cells, or None without ``attacks:``."""
        if not config.attacks:
            return None
        return make_attack_plan(config, fingerprint, models)

    def encode(self, plan: AttackPlan) -> dict[str, Any]:
        """Settings, defences, cells and adaptive methods as JSON."""
        return plan.to_json()

    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> AttackPlan:
        """The stored attack plan."""
        return AttackPlan.from_json(data, models)

    def size(self, plan: AttackPlan) -> int:
        """Number of distinct cells (two entries may share a setting)."""
        return len({c.key for c in plan.cells})

    def done(self, plan: AttackPlan, store: ResultsStore) -> int:
        """Number of finished cells."""
        finished = store.finished_keys()
        return len({c.key for c in plan.cells if c.key in finished})

    def run(self, plan: AttackPlan, context: PartRun) -> int:
        """Attack every group with unfinished cells."""
        return execute_attacks(
            plan,
            context.dataset,
            context.store,
            provider=context.provider,
            batch_size=context.config.batch_size,
            progress=context.progress,
            after_group=context.after_group,
        )

    def shards(self, plan: AttackPlan) -> list[Shard[AttackPlan]]:
        """One shard per group (model x attack setting, every defence and protocol)."""
        shards = []
        for group in plan.groups:
            source = group.setting.source
            models = (group.model,) + ((plan.sources[source],) if source is not None else ())
            shards.append(
                Shard(
                    replace(plan, groups=[group], cells=list(group.cells)),
                    models,
                    f"{group.model.id} {group.setting.label}",
                )
            )
        return shards

    def csv_rows(self, plan: AttackPlan, store: ResultsStore) -> list[dict[str, Any]]:
        """Every finished attack cell, then the per-sample worst case per budget."""
        return attack_csv_rows(plan, store)

    def leaderboard(self, plan: AttackPlan, store: ResultsStore) -> LeaderboardScores:
        """Per fix, the per-sample worst case over the attacks at the largest budget.

        A sample counts as robust only if every attack and protocol at that budget fails on it.
        """
        worst = worst_case(plan, store)
        scores = LeaderboardScores(defenses=list(dict.fromkeys(d.label for d in plan.defenses)))
        if not worst:
            return scores
        norm, eps = max(((n, e) for (_, _, n, e) in worst), key=lambda b: b[1])
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for (model_id, defense, _norm, budget), (robust, n, _) in worst.items():
            pair = (model_id, defense)
            if n and (pair not in best or budget > best[pair][0]):
                best[pair] = (budget, robust / n)
        title = f"attack worst case ({norm} eps={eps:g})"
        scores.worst_cases[title] = {pair: value for pair, (_, value) in best.items()}
        return scores

    def report_blocks(self, plan: AttackPlan, context: ReportContext) -> list[Block]:
        """The attack section."""
        return attack_blocks(plan, context.store, context.models)
