"""Report sections beyond the error tables.

Input quality, per-class precision / recall, relative improvement, mCE and the PSNR-vs-score
scatter.

Each function takes the plan, the aggregated statistics and (where needed) the raw rows or the
store, and returns blocks; an empty list when the study has nothing to show for it.

Example:
    >>> # used by robustlab.report.build.report_blocks
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import numpy as np

from robustlab.metrics import (
    corruption_error,
    precision_recall,
    relative_corruption_error,
    relative_improvement,
)
from robustlab.report.document import Block, Details, Figure, Heading, Paragraph, Table
from robustlab.report.plots import score_scatter
from robustlab.report.summary import Stat, StatKey
from robustlab.study.plan import Plan
from robustlab.study.store import CellRow, ResultsStore

Severities = dict[str, tuple[str | None, list[float]]]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def quality_tables(plan: Plan, rows: list[CellRow], severities: Severities) -> list[Block]:
    """Mean PSNR and SSIM of the degraded input per degradation and severity."""
    by_setting: dict[tuple[str, float | None], list[CellRow]] = defaultdict(list)
    for r in rows:
        if r.setting_name != "none" and (r.psnr is not None or r.ssim is not None):
            by_setting[(r.setting, r.severity)].append(r)
    if not by_setting:
        return []
    table_rows = []
    for label, (swept, values) in severities.items():
        for v in values:
            members = by_setting.get((label, v), [])
            if not members:
                continue
            psnrs = [r.psnr for r in members if r.psnr is not None]
            ssims = [r.ssim for r in members if r.ssim is not None]
            identical = sum(r.identical for r in members)
            total = sum(r.n for r in members if r.defense == members[0].defense)
            table_rows.append(
                [
                    label,
                    f"{swept}={v:g}",
                    _fmt(statistics.fmean(psnrs) if psnrs else None),
                    _fmt(statistics.fmean(ssims) if ssims else None, 3),
                    f"{identical / max(total, 1):.1%}" if identical else "0",
                ]
            )
    return [
        Heading("Input quality", 2),
        Paragraph(
            "PSNR (dB, over all copies) and SSIM (first copy of every image) of the degraded "
            "input against the clean image; *unchanged* counts degraded images identical to "
            "the clean one (their PSNR is infinite and left out of the mean)."
        ),
        Table(["degradation", "severity", "PSNR (dB)", "SSIM", "unchanged"], table_rows),
    ]


def output_quality_tables(plan: Plan, rows: list[CellRow], severities: Severities) -> list[Block]:
    """PSNR / SSIM of what the classifier sees after each defence (and a denoiser), per setting.

    One row per model and defence that transforms its input, one column per degradation
    setting (clean first), averaged over trials; huang2021's Table 2 for natural degradations.
    """
    by_key: dict[tuple[str, str, str, float | None], list[CellRow]] = defaultdict(list)
    for r in rows:
        if "output_ssim" in r.metrics:
            by_key[(r.model, r.defense, r.setting, r.severity)].append(r)
    if not by_key:
        return []
    columns: list[tuple[str, float | None, str]] = [("clean", None, "clean")]
    for label, (swept, values) in severities.items():
        columns += [(label, v, f"{label} {swept}={v:g}") for v in values]
    columns = [c for c in columns if any(k[2:] == c[:2] for k in by_key)]
    body = []
    for model in plan.models:
        for defense in plan.defenses:
            cells = []
            for label, severity, _ in columns:
                members = by_key.get((model.id, defense.label, label, severity), [])
                psnrs = [m.metrics["output_psnr"] for m in members if m.metrics["output_psnr"]]
                ssims = [m.metrics["output_ssim"] for m in members]
                cells.append(
                    "–"
                    if not members
                    else f"{_fmt(statistics.fmean(psnrs) if psnrs else None)} / "
                    f"{statistics.fmean(ssims):.3f}"
                )
            if any(c != "–" for c in cells):
                body.append([model.id, defense.label, *cells])
    return [
        Heading("Image quality after the defence", 2),
        Paragraph(
            "PSNR (dB) / SSIM, against the clean image, of what the classifier finally sees: the "
            "defence's output, and a denoiser's where the model is a classifier behind one "
            "(first copy of every image, mean over trials)."
        ),
        Table(["model", "defence", *(c[2] for c in columns)], body),
    ]


def per_class_tables(plan: Plan, rows: list[CellRow], classes: list[str]) -> list[Block]:
    """Per-class precision and recall of each bare model, clean vs each degradation (pooled).

    Pooling sums the confusion matrices over every severity, trial and copy of a degradation,
    as aghdam2016 Tables 1-3 pool their noise levels.
    """
    blocks: list[Block] = []
    for model in plan.models:
        pooled: dict[str, np.ndarray] = {}
        for r in rows:
            if r.model != model.id or r.defense != "none" or not r.confusion:
                continue
            matrix = np.asarray(r.confusion, dtype=np.int64)
            pooled[r.setting] = pooled.get(r.setting, 0) + matrix
        if "clean" not in pooled or len(pooled) < 2:
            continue
        labels = ["clean", *(k for k in pooled if k != "clean")]
        header = ["class"]
        columns = []
        for label in labels:
            precision, recall = precision_recall(pooled[label])
            columns.append((precision, recall))
            header += [f"{label} precision", f"{label} recall"]
        body = []
        for index, name in enumerate(classes):
            row = [name]
            for precision, recall in columns:
                row += [_fmt(precision[index]), _fmt(recall[index])]
            body.append(row)
        accuracy = ["top-1 accuracy"]
        for label in labels:
            matrix = pooled[label]
            accuracy += [_fmt(float(np.trace(matrix) / matrix.sum()), 4), ""]
        body.append(accuracy)
        blocks.append(
            Details(
                f"Per-class precision and recall: {model.id} (no defence)",
                [Table(header, body, caption="pooled over all severities, trials and copies")],
            )
        )
    if blocks:
        blocks.insert(0, Heading("Per-class precision and recall", 2))
    return blocks


def improvement_tables(
    plan: Plan, stats: dict[StatKey, Stat], severities: Severities
) -> list[Block]:
    """ghosh2018's relative improvement (d' - d) / (c - d) of each defence over the bare model."""
    defended = [d for d in plan.defenses if d.name != "none"]
    if not defended or not severities:
        return []
    blocks: list[Block] = [
        Heading("Relative improvement", 2),
        Paragraph(
            "(d' - d) / (c - d) per ghosh2018: c = clean accuracy of the bare model, d = its "
            "accuracy under the degradation, d' = accuracy with the defence. 0: no gain; "
            "1: back to clean accuracy; negative: the defence hurts."
        ),
    ]
    for model in plan.models:
        clean = stats.get((model.id, "none", "clean", None))
        if clean is None:
            continue
        for label, (swept, values) in severities.items():
            body = []
            for d in defended:
                row = [d.label]
                for v in values:
                    bare = stats.get((model.id, "none", label, v))
                    mine = stats.get((model.id, d.label, label, v))
                    value = None
                    if bare is not None and mine is not None:
                        value = relative_improvement(
                            clean.accuracy_mean, bare.accuracy_mean, mine.accuracy_mean
                        )
                    row.append(_fmt(value))
                body.append(row)
            blocks.append(
                Table(
                    ["defence", *(f"{swept}={v:g}" for v in values)],
                    body,
                    caption=f"{model.id}, {label}",
                )
            )
    return blocks


def mce_table(
    plan: Plan, stats: dict[StatKey, Stat], severities: Severities, baseline: str | None
) -> list[Block]:
    """Corruption errors, mCE and relative mCE of every model x defence against ``baseline``."""
    if baseline is None or not severities:
        return []
    base_clean = stats.get((baseline, "none", "clean", None))
    corruptions = list(severities)
    body = []
    for model in plan.models:
        for d in plan.defenses:
            clean = stats.get((model.id, d.label, "clean", None))
            ces: list[float] = []
            rel: list[float] = []
            row = [f"{model.id} + {d.label}"]
            for label in corruptions:
                values = severities[label][1]
                mine = [stats.get((model.id, d.label, label, v)) for v in values]
                base = [stats.get((baseline, "none", label, v)) for v in values]
                if any(s is None for s in mine + base):
                    row.append("–")
                    continue
                errors = [1 - s.accuracy_mean for s in mine]  # type: ignore[union-attr]
                base_errors = [1 - s.accuracy_mean for s in base]  # type: ignore[union-attr]
                ce = corruption_error(errors, base_errors)
                row.append(_fmt(None if ce is None else 100 * ce, 1))
                if ce is not None:
                    ces.append(ce)
                if clean is not None and base_clean is not None:
                    r = relative_corruption_error(
                        errors, 1 - clean.accuracy_mean, base_errors, 1 - base_clean.accuracy_mean
                    )
                    if r is not None:
                        rel.append(r)
            complete = len(ces) == len(corruptions)
            row.append(_fmt(100 * statistics.fmean(ces), 1) if complete else "–")
            row.append(
                _fmt(100 * statistics.fmean(rel), 1) if len(rel) == len(corruptions) else "–"
            )
            body.append(row)
    return [
        Heading("Corruption error (mCE)", 2),
        Paragraph(
            f"Corruption error in % of the baseline `{baseline}` without defence "
            "(Hendrycks & Dietterich 2019): CE = sum over severities of the error rate, divided "
            "by the baseline's sum; mCE averages CE over corruptions; relative mCE does the "
            "same with error increases over each model's own clean error. 100 = as good as "
            "the baseline; lower is better."
        ),
        Table(["model + defence", *corruptions, "mCE", "relative mCE"], body),
    ]


def scatter_figures(
    plan: Plan, rows: list[CellRow], store: ResultsStore, classes: list[str]
) -> list[Block]:
    """PSNR vs true-class score per class, misclassified in red (aghdam2016 Figures 3-7)."""
    blocks: list[Block] = []
    for model in plan.models:
        by_degradation: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        for r in rows:
            if r.model != model.id or r.defense != "none" or r.setting_name == "none":
                continue
            records = store.records(r.key)
            if records is not None:
                by_degradation[r.setting].append(records)
        for label, parts in by_degradation.items():
            merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            png = score_scatter(
                merged["psnr"].astype(np.float32),
                merged["score"].astype(np.float32),
                merged["label"].astype(np.int64),
                merged["predicted"].astype(np.int64),
                classes,
            )
            blocks.append(
                Figure(
                    f"scatter-{model.id}-{label}",
                    png,
                    f"{model.id}, {label}: PSNR of the degraded input vs the score of the true "
                    f"class, per class; red = misclassified, grey = correct "
                    f"({len(merged['label']):,} samples).",
                )
            )
    if blocks:
        blocks.insert(0, Heading("PSNR vs score", 2))
    return blocks
