"""The defence leaderboard: strongest levels, worst case, Pareto front, base comparisons."""

from __future__ import annotations

from pathlib import Path

from robustlab.report.document import Figure, Paragraph, Table
from robustlab.report.leaderboard import (
    Entry,
    LeaderboardScores,
    leaderboard_blocks,
    pareto_front,
)
from robustlab.study.parts.degradations import DegradationPart
from robustlab.study.plan import Cell, DefenseSetting, Plan, PlannedModel, Setting
from robustlab.study.store import CellRow, ResultsStore

ACCURACY = {  # (model, defence): (clean, sigma 0.1, sigma 0.3)
    ("a-e1", "none"): (0.99, 0.90, 0.50),
    ("a-e1", "median"): (0.97, 0.95, 0.80),
    ("b-e1", "none"): (0.98, 0.96, 0.85),
    ("b-e1", "median"): (0.96, 0.94, 0.86),
}
FORWARD = {"none": 1.0, "median": 1.5}


def _study(tmp_path: Path) -> tuple[Plan, ResultsStore]:
    models = [PlannedModel("a-e1", "a", None, description="x"),
              PlannedModel("b-e1", "b", None, description="y")]  # fmt: skip
    settings = [
        Setting("clean", "none", {}, None, None, False),
        Setting("noise", "gaussian_noise", {"sigma": 0.1}, "sigma", 0.1, True),
        Setting("noise", "gaussian_noise", {"sigma": 0.3}, "sigma", 0.3, True),
    ]
    defenses = [DefenseSetting("none", "none", {}), DefenseSetting("median", "median", {})]
    cells, rows = [], []
    for model in models:
        for d in defenses:
            for s, accuracy in zip(settings, ACCURACY[(model.id, d.label)], strict=True):
                key = f"{model.id}/{d.label}/{s.severity}"
                cells.append(Cell(key, model, d, s, 0))
                rows.append(
                    CellRow(key, "degradation", model.id, d.label, s.label, s.name, s.params,
                            s.severity_name, s.severity, 0, 100, round(100 * (1 - accuracy)),
                            accuracy, metrics={"forward_seconds": FORWARD[d.label]})
                )  # fmt: skip
    store = ResultsStore(tmp_path / "results.sqlite")
    store.add_cells(rows)
    return Plan(models, settings, defenses, [], cells), store


def _scores(plan: Plan, store: ResultsStore) -> list[LeaderboardScores]:
    return [DegradationPart().leaderboard(plan, store)]


def test_pareto_front_keeps_only_undominated_fixes() -> None:
    entries = [Entry("a", "none", 0.99, 0.5), Entry("a", "median", 0.97, 0.8),
               Entry("b", "none", 0.98, 0.85), Entry("b", "median", 0.96, 0.86)]  # fmt: skip
    assert [e.label for e in pareto_front(entries)] == ["b (median)", "b (none)", "a (none)"]


def test_leaderboard_table_ranks_by_worst_case_and_compares_with_the_base(
    tmp_path: Path,
) -> None:
    plan, store = _study(tmp_path)
    try:
        blocks = leaderboard_blocks(_scores(plan, store), plan.models, store, baseline=None)
    finally:
        store.close()
    table = next(b for b in blocks if isinstance(b, Table))
    rows = {(r[1], r[2]): dict(zip(table.header, r, strict=True)) for r in table.rows}
    assert [(r[1], r[2]) for r in table.rows] == [
        ("b-e1", "median"),
        ("b-e1", "none"),
        ("a-e1", "median"),
        ("a-e1", "none"),
    ]
    # sigma 0.3 is the strongest level: the fixes average 0.75 there against 0.94 at 0.1.
    assert rows[("a-e1", "median")]["noise %"] == "80.0"
    assert rows[("b-e1", "none")]["worst case %"] == "85.0"
    assert [r[0] for r in table.rows] == ["★", "★", "", "★"]
    assert rows[("a-e1", "median")]["inference ×"] == "1.50"
    # (d' - d) / (c - d) with c = 0.99, d = 0.50 (a-e1 bare), d' = 0.85.
    assert rows[("b-e1", "none")]["recovered (d'-d)/(c-d)"] == "+0.71"
    assert rows[("b-e1", "none")]["clean Δ vs base (pts)"] == "-1.0"
    summary = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    assert "the best worst case is **b-e1 (median)**, 86.0 %" in summary
    assert any(isinstance(b, Figure) for b in blocks)


def test_no_leaderboard_for_a_single_fix(tmp_path: Path) -> None:
    plan, store = _study(tmp_path)
    try:
        one = Plan(plan.models[:1], plan.settings, plan.defenses[:1], [], [
            c for c in plan.cells if c.model.id == "a-e1" and c.defense.label == "none"
        ])  # fmt: skip
        assert leaderboard_blocks(_scores(one, store), one.models, store, baseline=None) == []
    finally:
        store.close()


def test_inference_cost_is_blank_for_cells_without_timing(tmp_path: Path) -> None:
    plan, store = _study(tmp_path)
    try:
        for row in store.cells():
            store.add_cells([CellRow(**{**row.__dict__, "metrics": {}})])
        blocks = leaderboard_blocks(_scores(plan, store), plan.models, store, baseline="b-e1")
    finally:
        store.close()
    table = next(b for b in blocks if isinstance(b, Table))
    assert {r[table.header.index("inference ×")] for r in table.rows} == {"–"}


def test_another_part_adds_a_worst_case_column_without_report_changes(tmp_path: Path) -> None:
    plan, store = _study(tmp_path)
    other = LeaderboardScores(
        defenses=["none"],
        worst_cases={"attack worst case (linf eps=0.3)": {("b-e1", "none"): 0.10}},
    )
    try:
        blocks = leaderboard_blocks([*_scores(plan, store), other], plan.models, store, None)
    finally:
        store.close()
    table = next(b for b in blocks if isinstance(b, Table))
    rows = {(r[1], r[2]): dict(zip(table.header, r, strict=True)) for r in table.rows}
    column = "attack worst case (linf eps=0.3) %"
    assert rows[("b-e1", "none")][column] == "10.0"
    assert rows[("a-e1", "none")][column] == "–"
    # The new column counts in the overall worst case: b-e1 bare falls to the bottom.
    assert rows[("b-e1", "none")]["worst case %"] == "10.0"
    assert (table.rows[-1][1], table.rows[-1][2]) == ("b-e1", "none")
