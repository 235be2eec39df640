"""The degradation sweep's report sections: findings, paper vs ours, errors, curves, examples.

Error tables follow the papers' layout (errors out of N, rows = defences, change vs no
defence); the paper's numbers are put beside ours when the study names a reference; then
relative improvement, mCE, input quality, per-class precision / recall, accuracy-vs-severity
curves, PSNR-vs-score scatters and a grid of example images (clean, degraded, defended).

Example:
    >>> # DegradationPart.report_blocks (robustlab.study.parts.degradations) lays these out
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from robustlab.metrics import error_reduction, precision_recall
from robustlab.report.document import Block, Bullets, Figure, Heading, Paragraph, Table
from robustlab.report.plots import accuracy_curves, montage_figure, training_level_figure
from robustlab.report.sections import (
    improvement_tables,
    mce_table,
    output_quality_tables,
    per_class_tables,
    quality_tables,
    scatter_figures,
)
from robustlab.report.summary import Stat, StatKey, summarise
from robustlab.study.config import PerClassReference, ReferenceTable, StudyConfig
from robustlab.study.plan import Plan, Setting
from robustlab.study.store import CellRow, ResultsStore


def _fmt_errors(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    if stat.trials > 1:
        return f"{stat.errors_mean:.1f} ± {stat.errors_std:.1f}"
    return f"{stat.errors_mean:.0f}"


def _fmt_severity(value: float | None) -> str:
    return "clean" if value is None else f"{value:g}"


def _severities(plan: Plan) -> dict[str, tuple[str | None, list[float]]]:
    out: dict[str, tuple[str | None, list[float]]] = {}
    for s in plan.settings:
        if s.name == "none":
            continue
        _, values = out.setdefault(s.label, (s.severity_name, []))
        if s.severity is not None and s.severity not in values:
            values.append(s.severity)
    return out


def _error_tables(plan: Plan, stats: dict[StatKey, Stat]) -> list[Block]:
    blocks: list[Block] = []
    severities = _severities(plan)
    for model in plan.models:
        blocks.append(Heading(f"{model.id} ({model.length})", 3))
        for label, (swept, swept_values) in severities.items():
            # A setting without a swept value (a mixture as configured) is one column of its own.
            values: list[float | None] = list(swept_values) or [None]
            header = [
                "defence",
                "no noise",
                *("as configured" if v is None else f"{swept}={v:g}" for v in values),
            ]
            rows = []
            for d in plan.defenses:
                base_row = [_fmt_errors(stats.get((model.id, d.label, "clean", None)))]
                for v in values:
                    stat = stats.get((model.id, d.label, label, v))
                    text = _fmt_errors(stat)
                    bare = stats.get((model.id, "none", label, v))
                    if d.name != "none" and stat is not None and bare is not None:
                        cut = error_reduction(bare.errors_mean, stat.errors_mean)
                        if cut is not None:
                            text += f" ({-cut:+.0f}%)"
                    base_row.append(text)
                rows.append([d.label, *base_row])
            n_clean = {s.n for k, s in stats.items() if k[0] == model.id and k[2] == "clean"}
            n_noisy = {s.n for k, s in stats.items() if k[0] == model.id and k[2] == label}
            out_of = ", ".join(f"{n:,}" for n in sorted(n_clean | n_noisy))
            if n_clean and n_noisy and n_clean != n_noisy:
                out_of = f"{min(n_clean):,} clean / {max(n_noisy):,} degraded (images x copies)"
            blocks.append(
                Table(
                    header, rows, caption=f"{label}: errors out of {out_of} (change vs no defence)"
                )
            )
    return blocks


def _clean_error_table(plan: Plan, stats: dict[StatKey, Stat]) -> Table:
    """Errors on the clean test images, a row per model and a column per defence."""
    rows = [
        [
            model.id,
            *(_fmt_errors(stats.get((model.id, d.label, "clean", None))) for d in plan.defenses),
        ]
        for model in plan.models
    ]
    n = sorted({s.n for k, s in stats.items() if k[2] == "clean"})
    return Table(
        ["model", *(d.label for d in plan.defenses)],
        rows,
        caption=f"clean test images: errors out of {', '.join(f'{v:,}' for v in n)}",
    )


def headlines(plan: Plan, stats: dict[StatKey, Stat]) -> list[str]:
    """Per model and degradation: the best defence at the bare model's most damaging setting."""
    lines = []
    severities = _severities(plan)
    for model in plan.models:
        for label, (swept, values) in severities.items():
            if not values:
                continue
            # The most damaging setting for the bare model: for noise that is the largest
            # sigma, for JPEG the smallest quality; the stored results say which.
            scored = [
                (stats[k].errors_mean, v)
                for v in values
                if (k := (model.id, "none", label, v)) in stats
            ]
            if not scored:
                continue
            top = max(scored)[1]
            bare = stats[(model.id, "none", label, top)]
            best = min(
                (
                    (stats[(model.id, d.label, label, top)].errors_mean, d.label)
                    for d in plan.defenses
                    if (model.id, d.label, label, top) in stats
                ),
                default=None,
            )
            if best is None:
                continue
            if best[1] == "none" or math.isclose(best[0], bare.errors_mean):
                lines.append(
                    f"{model.id}, {label} at {swept}={top:g}: no defence beats the bare model "
                    f"({bare.errors_mean:.0f} errors out of {bare.n:,})."
                )
                continue
            cut = error_reduction(bare.errors_mean, best[0])
            assert cut is not None  # a defence made fewer errors, so the bare model made some
            share = f"{cut:.0f}%" if abs(cut) >= 1 else f"{cut:.1f}%"  # not "0% fewer"
            lines.append(
                f"{model.id}, {label} at {swept}={top:g}: **{best[1]}** cuts errors from "
                f"{bare.errors_mean:.0f} to {best[0]:.0f} out of {bare.n:,} ({share} fewer)."
            )
    return lines


def _pooled_confusion(rows: list[CellRow], model: str, degradation: str) -> np.ndarray | None:
    pooled = None
    for r in rows:
        if r.model == model and r.defense == "none" and r.setting == degradation:
            matrix = np.asarray(r.confusion, dtype=np.int64)
            pooled = matrix if pooled is None else pooled + matrix
    return pooled


def _per_class_reference(
    table: PerClassReference, rows: list[CellRow], classes: list[str]
) -> Table:
    ours: list[tuple[np.ndarray, float] | None] = []
    for column in table.columns:
        matrix = _pooled_confusion(rows, table.model, column)
        if matrix is None:
            ours.append(None)
            continue
        precision, recall = precision_recall(matrix)
        values = precision if table.metric == "precision" else recall
        ours.append((values, float(np.trace(matrix) / matrix.sum())))
    body = []
    for name, paper_values in table.rows.items():
        index = classes.index(name) if name in classes else None
        row = [name]
        for column_ours, paper in zip(ours, paper_values, strict=True):
            mine = "–"
            if column_ours is not None and index is not None:
                mine = f"{column_ours[0][index]:.2f}"
            row.append(f"{mine} / {'–' if paper is None else f'{paper:.2f}'}")
        body.append(row)
    if table.accuracy is not None:
        row = ["top-1 accuracy"]
        for column_ours, paper in zip(ours, table.accuracy, strict=True):
            mine = "–" if column_ours is None else f"{column_ours[1]:.4f}"
            row.append(f"{mine} / {'–' if paper is None else f'{paper:.4f}'}")
        body.append(row)
    return Table(
        ["class", *table.columns],
        body,
        caption=f"{table.title} ({table.metric}, model {table.model}, no defence, pooled)",
    )


def reference_blocks(
    config: StudyConfig,
    stats: dict[StatKey, Stat],
    rows: list[CellRow],
    classes: list[str],
    cards: dict[str, dict[str, Any]] | None = None,
    attack_rows: list[CellRow] | None = None,
) -> list[Block]:
    """The paper's numbers beside ours, when the study names a ``reference``.

    A table with a ``protocol`` reads its attack's cells of that protocol from
    ``attack_rows`` (and its clean column from the degradation cells).
    """
    reference = config.reference
    if reference is None:
        return []
    blocks: list[Block] = [
        Heading("Paper vs ours", 2),
        Paragraph(f"Reference: {reference.citation.strip()}. Each cell reads **ours / paper**."),
    ]
    if reference.notes:
        blocks.append(Bullets(reference.notes))
    for table in reference.tables:
        table_stats = stats
        if table.protocol is not None:
            chosen = [r for r in attack_rows or [] if r.protocol == table.protocol]
            table_stats = {**stats, **summarise(chosen)}
        blocks.append(_reference_table(table, table_stats, cards or {}))
    for per_class in reference.per_class:
        blocks.append(_per_class_reference(per_class, rows, classes))
    return blocks


def _reference_table(
    table: ReferenceTable, stats: dict[StatKey, Stat], cards: dict[str, dict[str, Any]]
) -> Table:
    header = [
        "model" if table.rows_are == "models" else "defence",
        *(_fmt_severity(c) for c in table.columns),
    ]
    if table.improvement is not None:
        header.append("(d'-d)/(c-d)")
    if table.train_accuracy is not None:
        header.append("train accuracy")
    rows = []
    n_ours = None
    ours_values: dict[str, dict[float | None, float]] = {}
    for label, values in table.rows.items():
        row = [label]
        for column, paper in zip(table.columns, values, strict=True):
            stat = stats.get(table.cell(label, column))
            if stat is not None:
                n_ours = stat.n
                ours_values.setdefault(label, {})[column] = stat.accuracy_mean
            ours = "–"
            if stat is not None:
                ours = (
                    f"{stat.errors_mean:.0f}"
                    if table.metric == "errors"
                    else f"{stat.accuracy_mean:.4f}"
                )
            if column is None and table.rows_are == "defenses" and label != "none":
                row.append("")
                continue
            paper_text = "–" if paper is None else f"{paper:g}"
            row.append(f"{ours} / {paper_text}")
        rows.append(row)
    if table.improvement is not None:
        assert table.baseline is not None
        last = [c for c in table.columns if c is not None][-1]
        base = ours_values.get(table.baseline, {})
        for row in rows:
            mine = "–"
            c, d = base.get(None), base.get(last)
            d2 = ours_values.get(row[0], {}).get(last)
            if c is not None and d is not None and d2 is not None and abs(c - d) > 1e-12:
                mine = f"{(d2 - d) / (c - d):+.2f}"
            paper = table.improvement.get(row[0])
            row.append(f"{mine} / {'–' if paper is None else f'{paper:g}'}")
    if table.train_accuracy is not None:
        for row in rows:
            card = cards.get(row[0], {}).get("card", {})
            mine = card.get("train_accuracy")
            paper = table.train_accuracy.get(row[0])
            row.append(
                f"{'–' if mine is None else f'{mine:.4f}'} / "
                f"{'–' if paper is None else f'{paper:.4f}'}"
            )
    unit = f" (errors out of {n_ours or '?'} ours / {table.n or '?'} paper)"
    return Table(header, rows, caption=table.title + (unit if table.metric == "errors" else ""))


def _example_figure(plan: Plan, store: ResultsStore) -> Figure | None:
    stored = store.examples()
    if not stored:
        return None
    columns = ["input", *(d.label for d in plan.defenses)]
    rows: list[tuple[str, Sequence[np.ndarray | None]]] = []
    seen: set[str] = set()
    settings: list[Setting] = []
    for s in plan.settings:
        if s.key not in seen:
            seen.add(s.key)
            settings.append(s)
    for s in settings:
        strips: list[np.ndarray | None] = []
        for column in ["degraded", *(d.label for d in plan.defenses)]:
            item = stored.get((s.key, column))
            strips.append(
                None if item is None else np.frombuffer(item[0], dtype=np.uint8).reshape(item[1])
            )
        if any(x is not None for x in strips):
            name = (
                "clean"
                if s.name == "none"
                else s.label
                if s.severity is None  # a setting without a swept value (a mixture, as is)
                else f"{s.label} {s.severity_name}={s.severity:g}"
            )
            rows.append((name, strips))
    if not rows:
        return None
    return Figure(
        "examples",
        montage_figure(rows, columns),
        "Example test images: the degraded input and what each defence makes of it "
        "(lin2022 Figures 7 and 8).",
    )


def degradation_blocks(
    plan: Plan, store: ResultsStore, config: StudyConfig, classes: list[str]
) -> list[Block]:
    """The degradation sweep's body sections, from the stored plan and cells."""
    rows = store.cells([c.key for c in plan.cells])
    stats = summarise(rows)
    blocks: list[Block] = []
    copies_note = (
        f" Every test image is degraded {config.copies} times per trial (Monte-Carlo copies), "
        "so N counts images x copies."
        if config.copies > 1
        else ""
    )
    severities = _severities(plan)
    if severities:
        blocks.append(Heading("Errors per defence and degradation", 2))
        if copies_note:
            blocks.append(Paragraph(copies_note.strip()))
        blocks += _error_tables(plan, stats)
    elif len(plan.defenses) > 1:
        # Clean images only (an attack study): one table, models against defences.
        blocks += [Heading("Errors on clean images", 2), _clean_error_table(plan, stats)]
    blocks += improvement_tables(plan, stats, severities)
    blocks += mce_table(plan, stats, severities, config.baseline_model)
    blocks += quality_tables(plan, rows, severities)
    blocks += output_quality_tables(plan, rows, severities)
    if classes:
        blocks += per_class_tables(plan, rows, classes)
    if severities:
        curves = accuracy_curves(
            stats,
            [m.id for m in plan.models],
            [d.label for d in plan.defenses],
            [(label, swept, values) for label, (swept, values) in severities.items()],
        )
        blocks += [
            Heading("Accuracy vs severity", 2),
            Figure(
                "accuracy",
                curves,
                (
                    "Accuracy per model (colour); dotted lines: each model's clean accuracy"
                    if len(plan.defenses) == 1
                    else "Accuracy per defence (colour) and model (line style); grey lines: "
                    "clean accuracy of the bare model"
                )
                + "; bands: ± one standard deviation over trials.",
            ),
        ]
    blocks += training_level_blocks(plan, store, config)
    if classes:
        blocks += scatter_figures(plan, rows, store, classes)
    # Clean images through no defence show nothing the reader has not seen.
    examples = _example_figure(plan, store) if severities or len(plan.defenses) > 1 else None
    if examples is not None:
        blocks += [Heading("Examples", 2), examples]
    return blocks


def _level_value(value: object) -> float | None:
    """A number for a swept training level: itself, a list's largest, a range's high end."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return float(max(value))
    if isinstance(value, dict) and isinstance(value.get("high"), int | float):
        return float(value["high"])
    return None


def training_level_blocks(plan: Plan, store: ResultsStore, config: StudyConfig) -> list[Block]:
    """Cavey's Figures A-C: accuracy against the training level, one line per test setting.

    For every family of models made by one ``grid`` key (same strategy and base, ``sweep``
    differing in one numeric key), the bare models' accuracy at each test setting (clean and
    every degradation level) is drawn against the swept value, with the natural models
    (standard strategy, no sweep) as dashed reference lines.
    """
    rows = store.cells([c.key for c in plan.cells])
    accuracy: dict[tuple[str, str, float | None], list[float]] = {}
    for r in rows:
        if r.defense == "none":
            accuracy.setdefault((r.model, r.setting, r.severity), []).append(r.accuracy)
    families: dict[tuple[str, str], list[tuple[float, list[str]]]] = {}
    natural: list[str] = []
    for m in config.models:
        if not m.sweep and m.strategy_name == "standard":
            natural += m.ids()
        for key, value in m.sweep.items():
            x = _level_value(value)
            if x is None:
                continue
            others = {k: v for k, v in m.sweep.items() if k != key}
            group = (f"{m.strategy_name} {json.dumps(others, sort_keys=True)}", key)
            families.setdefault(group, []).append((x, m.ids()))
    tests = sorted({(label, sev) for (_, label, sev) in accuracy}, key=lambda t: (t[0], t[1] or 0))
    blocks: list[Block] = []
    for (family, key), points in families.items():
        if len({x for x, _ in points}) < 2:
            continue
        for epochs_index in range(max(len(ids) for _, ids in points)):
            series = []
            for label, severity in tests:
                xs, ys = [], []
                for x, ids in sorted(points):
                    if epochs_index < len(ids) and (ids[epochs_index], label, severity) in accuracy:
                        values = accuracy[(ids[epochs_index], label, severity)]
                        xs.append(x)
                        ys.append(sum(values) / len(values))
                reference = [
                    sum(accuracy[(n, label, severity)]) / len(accuracy[(n, label, severity)])
                    for n in natural
                    if (n, label, severity) in accuracy
                ]
                if xs:
                    name = label if severity is None else f"{label} {severity:g}"
                    series.append((name, xs, ys, reference[0] if reference else None))
            if not series:
                continue
            title = f"{family.split(' ', 1)[0]}: accuracy vs training {key.split('.')[-1]}"
            blocks.append(
                Figure(
                    f"training-level-{len(blocks)}",
                    training_level_figure(series, key.split(".")[-1], title),
                    f"{title} ({key}); one line per test setting, dashed: the natural model "
                    "(cavey Figures A-C).",
                )
            )
    return [Heading("Accuracy vs training level", 2), *blocks] if blocks else []
