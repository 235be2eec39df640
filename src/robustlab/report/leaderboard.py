"""The defence leaderboard: every model x input defence of a study ranked on one page.

One row per fix (a model, possibly trained with a strategy, behind an input defence): clean
accuracy, accuracy at each degradation's strongest level (the level where the study's fixes
do worst on average), the mean and the worst of those, the per-sample worst case under the
study's attacks at their largest budget (every attack and protocol must fail to count a sample
as broken), the overall worst case, what the fix cost to train (the model's training seconds,
its parents' included) and its inference cost relative to the reference model without a
defence. With a baseline (``baseline_model``, else the first model) it adds the clean-accuracy
change (cavey's "within X % of the natural model") and ghosh2018's recovered share
``(d' - d) / (c - d)`` of the mean degraded accuracy. A scatter of clean against worst-case
accuracy marks the Pareto front: the fixes no other fix beats on both.

Example:
    >>> entries = [Entry("a", "none", clean=0.99, worst=0.20), Entry("b", "median", 0.97, 0.60),
    ...            Entry("c", "none", 0.95, 0.50)]
    >>> [e.label for e in pareto_front(entries)]
    ['b (median)', 'a (none)']
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from robustlab.report.document import Block, Figure, Heading, Paragraph, Table
from robustlab.report.plots import _png, pyplot
from robustlab.study.plan import PlannedModel
from robustlab.study.store import CellRow, ResultsStore

#: ``(model id, defence label)``: one fix.
Pair = tuple[str, str]


@dataclass
class LeaderboardScores:
    """What one study part contributes to the leaderboard, per fix ``(model id, defence)``.

    A part returns it from :meth:`~robustlab.study.parts.base.StudyPart.leaderboard`; the
    leaderboard merges every part's scores and never looks at a part's plan.

    Attributes:
        defenses: the defence labels the part evaluated, in study order.
        clean: clean accuracy.
        clean_seconds: seconds of one clean pass over the test set (inference cost).
        degraded: degradation label -> accuracy at its strongest level; these columns make up
            the mean and worst degraded accuracy.
        worst_cases: column title -> accuracy counted in the overall worst case only (e.g. the
            per-sample worst case over the study's attacks at their largest budget).
        shown: column title -> accuracy shown beside the others but counted in no worst case
            (e.g. the certified accuracy of a model's *smoothed* classifier, which is another
            classifier than the model ranked).
    """

    defenses: list[str] = field(default_factory=list)
    clean: dict[Pair, float] = field(default_factory=dict)
    clean_seconds: dict[Pair, float] = field(default_factory=dict)
    degraded: dict[str, dict[Pair, float]] = field(default_factory=dict)
    worst_cases: dict[str, dict[Pair, float]] = field(default_factory=dict)
    shown: dict[str, dict[Pair, float]] = field(default_factory=dict)


@dataclass
class Entry:
    """One fix: a model behind an input defence, and what it scored."""

    model: str
    defense: str
    clean: float | None = None
    worst: float | None = None  # overall worst case (degradations and attacks)
    degraded: dict[str, float] = field(default_factory=dict)  # label -> strongest-level accuracy
    worst_cases: dict[str, float] = field(default_factory=dict)  # e.g. attacks' worst case
    shown: dict[str, float] = field(default_factory=dict)  # informative, in no worst case
    train_seconds: float | None = None
    inference: float | None = None  # seconds per clean pass, relative to the reference

    @property
    def label(self) -> str:
        """``model (defence)``."""
        return f"{self.model} ({self.defense})"

    @property
    def mean_degraded(self) -> float | None:
        """Mean accuracy over the degradations' strongest levels."""
        values = list(self.degraded.values())
        return sum(values) / len(values) if values else None

    @property
    def worst_degraded(self) -> float | None:
        """Lowest accuracy over the degradations' strongest levels."""
        return min(self.degraded.values()) if self.degraded else None


def pareto_front(entries: Sequence[Entry]) -> list[Entry]:
    """Entries no other entry beats on clean *and* worst-case accuracy, best worst case first."""
    scored = [e for e in entries if e.clean is not None and e.worst is not None]
    front = [
        e
        for e in scored
        if not any(
            o.clean >= e.clean and o.worst >= e.worst and (o.clean, o.worst) != (e.clean, e.worst)  # type: ignore[operator]
            for o in scored
        )
    ]
    return sorted(front, key=lambda e: -(e.worst or 0.0))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _strongest_levels(rows: list[CellRow]) -> dict[str, float | None]:
    """Per degradation label, the severity where the fixes do worst on average."""
    by_level: dict[tuple[str, float | None], list[float]] = defaultdict(list)
    for r in rows:
        if r.setting_name != "none":
            by_level[(r.setting, r.severity)].append(r.accuracy)
    strongest: dict[str, tuple[float, float | None]] = {}
    for (label, severity), accuracies in by_level.items():
        mean = _mean(accuracies)
        if label not in strongest or mean < strongest[label][0]:
            strongest[label] = (mean, severity)
    return {label: severity for label, (_, severity) in strongest.items()}


def _training_seconds(
    model: PlannedModel, cards: dict[str, dict[str, object]], seen: set[str] | None = None
) -> float | None:
    """The model's training seconds plus its ancestors' (each counted once)."""
    seen = set() if seen is None else seen
    if model.id in seen:
        return 0.0
    seen.add(model.id)
    card = cards.get(model.id, {}).get("card", {})
    own = card.get("train_seconds") if isinstance(card, dict) else None
    if model.recipe is None and model.composite is None:
        return 0.0
    if model.composite is not None:
        own = 0.0  # built from its members, not trained
    if not isinstance(own, int | float):
        return None
    total = float(own)
    for _, parent in model.parents:
        extra = _training_seconds(parent, cards, seen)
        if extra is None:
            return None
        total += extra
    return total


def degradation_scores(rows: list[CellRow], defenses: list[str]) -> LeaderboardScores:
    """Clean accuracy, strongest-level accuracy per degradation and clean-pass seconds."""
    strongest = _strongest_levels(rows)
    grouped: dict[Pair, list[CellRow]] = defaultdict(list)
    for r in rows:
        grouped[(r.model, r.defense)].append(r)
    scores = LeaderboardScores(defenses=list(defenses))
    for pair, cells in grouped.items():
        clean = [r.accuracy for r in cells if r.setting_name == "none"]
        if clean:
            scores.clean[pair] = _mean(clean)
        seconds = _clean_seconds(cells)
        if seconds is not None:
            scores.clean_seconds[pair] = seconds
        for label, severity in strongest.items():
            hits = [r.accuracy for r in cells if r.setting == label and r.severity == severity]
            if hits:
                scores.degraded.setdefault(label, {})[pair] = _mean(hits)
    return scores


def leaderboard_entries(
    scores: Sequence[LeaderboardScores],
    models: list[PlannedModel],
    store: ResultsStore,
    reference: str,
) -> list[Entry]:
    """Every (model, defence) of the study with its scores, merged from every part's."""
    defenses = list(dict.fromkeys(d for part in scores for d in part.defenses))
    clean = {pair: v for part in scores for pair, v in part.clean.items()}
    clean_seconds = {pair: v for part in scores for pair, v in part.clean_seconds.items()}
    cards = store.models()
    reference_time = clean_seconds.get((reference, "none"))
    entries = []
    for model in models:
        seconds = _training_seconds(model, cards)
        for defense in defenses:
            pair = (model.id, defense)
            entry = Entry(model.id, defense, clean=clean.get(pair))
            for part in scores:
                for label, values in part.degraded.items():
                    if pair in values:
                        entry.degraded[label] = values[pair]
                for title, values in part.worst_cases.items():
                    if pair in values:
                        entry.worst_cases[title] = values[pair]
                for title, values in part.shown.items():
                    if pair in values:
                        entry.shown[title] = values[pair]
            candidates = [
                v for v in (entry.worst_degraded, *entry.worst_cases.values()) if v is not None
            ]
            entry.worst = min(candidates) if candidates else None
            entry.train_seconds = seconds
            own_time = clean_seconds.get(pair)
            if own_time is not None and reference_time:
                entry.inference = own_time / reference_time
            if entry.clean is not None or entry.worst_cases:
                entries.append(entry)
    return entries


def _clean_seconds(cells: list[CellRow]) -> float | None:
    times = [
        float(r.metrics["forward_seconds"])
        for r in cells
        if r.setting_name == "none" and r.metrics.get("forward_seconds") is not None
    ]
    return sum(times) if times else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _pareto_figure(entries: list[Entry], front: list[Entry]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    on_front = {id(e) for e in front}
    scored = [e for e in entries if e.clean is not None and e.worst is not None]
    for e in scored:
        star = id(e) in on_front
        ax.scatter(
            100 * e.clean,  # type: ignore[operator]
            100 * e.worst,  # type: ignore[operator]
            s=90 if star else 36,
            marker="*" if star else "o",
            color="tab:red" if star else "tab:blue",
            zorder=3,
        )
    line = sorted((100 * e.clean, 100 * e.worst) for e in front if e.clean and e.worst)
    if len(line) > 1:
        ax.plot(*zip(*line, strict=True), color="tab:red", lw=1, ls="--", zorder=2)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("worst-case accuracy (%)")
    ax.set_title("Clean vs worst case (red stars: Pareto front)")
    ax.grid(alpha=0.3)
    _place_labels(fig, ax, scored)
    return _png(fig)


def _place_labels(fig: Any, ax: Any, entries: list[Entry]) -> None:
    """Label every point where the label overlaps no label placed before and stays inside."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    offsets = [(dx, dy) for dx in (4, -4) for dy in (3, -9, 12, -18, 21, -27)]
    placed: list[Any] = []

    def label(e: Entry, dx: int, dy: int) -> Any:
        return ax.annotate(
            e.label,
            (100 * e.clean, 100 * e.worst),  # type: ignore[operator]
            fontsize=7,
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
        )

    for e in sorted(entries, key=lambda e: -(e.worst or 0.0)):
        for dx, dy in offsets:
            box = (text := label(e, dx, dy)).get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
            if inside and not any(box.overlaps(other) for other in placed):
                break
            text.remove()
        else:  # no free place: the default one, overlapping
            box = label(e, *offsets[0]).get_window_extent(renderer)
        placed.append(box)


def leaderboard_blocks(
    scores: Sequence[LeaderboardScores],
    models: list[PlannedModel],
    store: ResultsStore,
    baseline: str | None,
) -> list[Block]:
    """The leaderboard section (empty for a study of one model and one defence).

    Args:
        scores: every study part's contribution (parts without one give none).
        models: the study's planned models, in plan order.
        store: the results store (model cards: training seconds).
        baseline: the model the last two columns compare with (default: the first model).
    """
    reference = baseline or (models[0].id if models else "")
    entries = leaderboard_entries(scores, models, store, reference)
    if len(entries) < 2:
        return []
    entries.sort(key=lambda e: (-(e.worst if e.worst is not None else -1.0), -(e.clean or 0.0)))
    front = pareto_front(entries)
    on_front = {id(e) for e in front}
    labels = sorted({label for e in entries for label in e.degraded})
    extra = list(dict.fromkeys(title for part in scores for title in part.worst_cases))
    shown = list(dict.fromkeys(title for part in scores for title in part.shown))
    base = next((e for e in entries if e.model == reference and e.defense == "none"), None)
    header = ["", "model", "defence", "clean %", *(f"{label} %" for label in labels)]
    if labels:
        header += ["mean %", "worst degr. %"]
    header += [f"{title} %" for title in extra]
    header += ["worst case %"]
    header += [f"{title} %" for title in shown]
    header += ["train s", "inference ×"]
    if base is not None:
        header += ["clean Δ vs base (pts)", "recovered (d'-d)/(c-d)"]
    body = []
    for e in entries:
        row = ["★" if id(e) in on_front else "", e.model, e.defense, _pct(e.clean)]
        row += [_pct(e.degraded.get(label)) for label in labels]
        if labels:
            row += [_pct(e.mean_degraded), _pct(e.worst_degraded)]
        row += [_pct(e.worst_cases.get(title)) for title in extra]
        row += [_pct(e.worst), *(_pct(e.shown.get(title)) for title in shown)]
        row += [
            "–" if e.train_seconds is None else f"{e.train_seconds:.0f}",
            "–" if e.inference is None else f"{e.inference:.2f}",
        ]
        if base is not None:
            row += [_clean_delta(e, base), _recovered(e, base)]
        body.append(row)
    cheapest = _cheapest_fix(entries, front, base)
    blocks: list[Block] = [
        Heading("Defence leaderboard", 2),
        Paragraph(
            "Every model behind every input defence, ranked by its worst case (the lowest of "
            "its accuracy at each degradation's strongest level and, with attacks, of the "
            "per-sample worst case over every attack and protocol at the largest budget). "
            f"Train s: the model's training time, its parents' included; inference ×: time of "
            f"a clean pass relative to {reference} without a defence. ★: on the Pareto front "
            "(no other fix is better on both clean and worst-case accuracy)."
            + (
                f" Base for the last two columns: {reference} without a defence; recovered = "
                "(d' - d) / (c - d) with c its clean and d its mean degraded accuracy, d' the "
                "fix's mean degraded accuracy (ghosh2018)."
                if base is not None
                else ""
            )
        ),
    ]
    if cheapest:
        blocks.append(Paragraph(cheapest))
    blocks.append(Table(header, body, caption="Defence leaderboard (accuracies in %)"))
    if len([e for e in entries if e.clean is not None and e.worst is not None]) >= 2:
        blocks.append(
            Figure(
                "leaderboard-pareto",
                _pareto_figure(entries, front),
                "Clean against worst-case accuracy for every fix; the dashed line joins the "
                "Pareto front.",
            )
        )
    return blocks


def _clean_delta(e: Entry, base: Entry) -> str:
    if e.clean is None or base.clean is None:
        return "–"
    return f"{100 * (e.clean - base.clean):+.1f}"


def _recovered(e: Entry, base: Entry) -> str:
    c, d, d2 = base.clean, base.mean_degraded, e.mean_degraded
    if c is None or d is None or d2 is None or math.isclose(c, d, abs_tol=1e-9):
        return "–"
    return f"{(d2 - d) / (c - d):+.2f}"


def _cheapest_fix(entries: list[Entry], front: list[Entry], base: Entry | None) -> str:
    """The best worst case, and the cheapest fix on the front that beats the base's."""
    if base is None or base.worst is None:
        return ""
    better = [e for e in front if e is not base and e.worst is not None and e.worst > base.worst]
    if not better:
        return (
            f"No fix beats {base.label} on the worst case ({_pct(base.worst)} %): nothing "
            "in this study really helps there."
        )
    best = max(better, key=lambda e: (e.worst or 0.0, e.clean or 0.0))
    cheapest = min(better, key=lambda e: (e.train_seconds or 0.0, e.inference or 1.0))
    text = (
        f"Against {base.label} (worst case {_pct(base.worst)} %, clean {_pct(base.clean)} %): "
        f"the best worst case is **{best.label}**, {_pct(best.worst)} % (clean "
        f"{_pct(best.clean)} %)"
    )
    if cheapest is not best:
        text += (
            f"; the cheapest fix that beats the base is **{cheapest.label}**, "
            f"{_pct(cheapest.worst)} % (train {cheapest.train_seconds or 0:.0f} s, inference "
            f"{cheapest.inference or 1.0:.2f}x)"
        )
    return text + "."
