"""The report's adversarial-attack section: oblivious vs adaptive, worst case, sanity flags.

From the results store alone (the attack cells and their per-sample records) it lays out:

- findings in words: for each defence, whether the robustness the *oblivious* protocol
  credits it with (adversarial examples made against the bare classifier, then passed through
  the defence; huang2021's protocol) survives an *adaptive* attacker who differentiates the
  whole defended pipeline. A defence "loses most of it" when the adaptive gain over the
  undefended model is less than half of the oblivious gain;
- robust accuracy per defence and protocol at every attack strength (a table and curves);
- the per-sample worst case: a sample is robust at a budget only if it survives every attack
  and protocol run at that budget;
- where one attack overstated robustness: at each budget, every attack whose robust accuracy
  is more than :data:`OVERSTATED` above the strongest attack's there (PGD against
  ``autoattack``, typically), said in words;
- minimum-norm attacks (``fmn`` without ``eps``): the whole robust-accuracy-vs-eps curve from
  one run, with the share of images fooled and the median smallest perturbation;
- the sanity flags of :mod:`robustlab.attack.sanity` that tripped, including a black-box
  attack beating the white-box ones (inside ``autoattack``, and across a study's attacks at
  one budget).

Example:
    >>> credit = Credit("median", "pgd", "eps=0.1", undefended=0.02, oblivious=0.60,
    ...                 adaptive=0.05)
    >>> round(credit.kept, 3), credit.lost_most
    (0.052, True)
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab.attack.base import ATTACKS
from robustlab.attack.minimum_norm import robust_accuracy_curve
from robustlab.attack.sanity import (
    SanityFlag,
    accuracy_rises,
    black_box_wins,
    large_eps_survivors,
    unstable_predictions,
    vanishing_gradients,
    zero_gradients,
)
from robustlab.report.document import Block, Bullets, Figure, Heading, Paragraph, Table
from robustlab.report.plots import pyplot
from robustlab.study.attack_executor import (
    PROTOCOLS,
    AttackCell,
    AttackPlan,
    worst_case,
)
from robustlab.study.composites import oblivious_role
from robustlab.study.plan import PlannedModel
from robustlab.study.store import CellRow, ResultsStore

# An oblivious gain below this (absolute accuracy) is too small to call a credit.
MIN_CREDIT = 0.05
#: A black-box attack beats the white-box ones when its robust accuracy is lower by more than
#: this (absolute accuracy; AutoAttack's ``check_square_sr`` margin).
BLACK_BOX_TOLERANCE = 0.002
#: An attack overstates robustness when it leaves more than this (absolute accuracy) standing
#: above the strongest attack at the same budget: 1 point, the issue's agreement tolerance.
OVERSTATED = 0.01
_AS_CONFIGURED = "as configured"  # the setting of an attack without a grid


@dataclass(frozen=True)
class Credit:
    """Robust accuracy of one defence at one attack setting under both protocols."""

    defense: str
    attack: str
    setting: str
    undefended: float
    oblivious: float
    adaptive: float
    model: str = ""

    @property
    def credited(self) -> float:
        """The gain over the undefended model that the oblivious protocol credits."""
        return self.oblivious - self.undefended

    @property
    def kept(self) -> float:
        """The share of the credited gain that survives the adaptive attack (can be < 0)."""
        return (self.adaptive - self.undefended) / self.credited if self.credited > 0 else 1.0

    @property
    def lost_most(self) -> bool:
        """A clear oblivious credit of which the adaptive attack leaves less than half."""
        return self.credited >= MIN_CREDIT and self.kept < 0.5


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _series(plan: AttackPlan) -> dict[tuple[str, str, str], list[AttackCell]]:
    """``(model, attack label, stored defence label) -> cells in grid order``."""
    out: dict[tuple[str, str, str], list[AttackCell]] = defaultdict(list)
    for cell in plan.cells:
        out[(cell.model.id, cell.setting.label, cell.defense_label)].append(cell)
    return out


def credits(plan: AttackPlan, rows: dict[str, CellRow]) -> list[Credit]:
    """Every (model, defence, attack setting) measured under both protocols and undefended."""
    by_key: dict[tuple[str, str, str, str], CellRow] = {}
    for cell in plan.cells:
        row = rows.get(cell.key)
        if row is not None:
            by_key[(cell.model.id, cell.setting.key, cell.defense.label, cell.protocol)] = row
    out = []
    for cell in plan.cells:
        if cell.protocol != "adaptive" or cell.setting.unbounded or cell.setting.eps == 0:
            continue
        model, setting = cell.model.id, cell.setting
        adaptive = by_key.get((model, setting.key, cell.defense.label, "adaptive"))
        oblivious = by_key.get((model, setting.key, cell.defense.label, "oblivious"))
        if adaptive is None or oblivious is None:
            continue
        if cell.defense.name == "none":
            if cell.model.composite is None:
                continue
            # A composite is a defence of its own: the oblivious attack is crafted on its base
            # model (the parent an unaware attacker targets), whose accuracy is "undefended".
            base = cell.model.parent_ids.get(oblivious_role(cell.model.composite))
            bare = next(
                (
                    by_key[k]
                    for p in PROTOCOLS
                    if (k := (base, setting.key, cell.defense.label, p)) in by_key
                ),
                None,
            )
            if bare is None:
                continue  # the base model is not a model of the study: nothing to compare
            defense, shown_model = model, str(base)
        else:
            bare = next(
                (
                    by_key[k]
                    for d in plan.defenses
                    if d.name == "none"
                    for k in [(model, setting.key, d.label, p) for p in PROTOCOLS]
                    if k in by_key
                ),
                None,
            )
            defense, shown_model = cell.defense.label, model
        out.append(
            Credit(
                defense=defense,
                attack=setting.label,
                setting=_setting_text(setting.severity_name, setting.severity),
                undefended=bare.accuracy if bare is not None else 0.0,
                oblivious=oblivious.accuracy,
                adaptive=adaptive.accuracy,
                model=shown_model,
            )
        )
    return out


_KEPT_CAVEAT = (
    "The attack that knows the defence did not remove that gain: either the defence removes "
    "part of what this budget lets an attacker do, or it hides gradients in a way this "
    "attack does not get round; quote the worst case, and try more steps or another attack "
    "before relying on it."
)


def _findings(plan: AttackPlan, rows: dict[str, CellRow], models: list[str]) -> list[str]:
    lines = []
    found = credits(plan, rows)
    for model in models:
        mine = [c for c in found if c.model == model]
        for defense in dict.fromkeys(c.defense for c in mine):
            for attack in dict.fromkeys(c.attack for c in mine if c.defense == defense):
                group = [c for c in mine if c.defense == defense and c.attack == attack]
                best = max(group, key=lambda c: c.credited)
                at = "" if best.setting == _AS_CONFIGURED else f" at {best.setting}"
                where = f"{attack}{at} ({model})"
                numbers = (
                    f"oblivious {_pct(best.oblivious)}%, adaptive {_pct(best.adaptive)}%, "
                    f"undefended {_pct(best.undefended)}%"
                )
                if best.credited <= 0:
                    lines.append(
                        f"**{defense}** gives no robustness against {attack} even obliviously "
                        f"({model}): never above the undefended model."
                    )
                elif best.credited < MIN_CREDIT:
                    lines.append(
                        f"**{defense}** gains no clear robustness against {attack} even "
                        f"obliviously ({model}; at most {100 * best.credited:+.1f} points, at "
                        f"{best.setting})."
                    )
                elif best.lost_most:
                    share = "all" if best.kept <= 0 else f"{100 * (1 - best.kept):.0f}%"
                    lines.append(
                        f"**{defense} loses {share} of the robustness the oblivious protocol "
                        f"credits it with** against {where}: {numbers}. Its apparent "
                        "robustness came from the attacker ignoring it."
                    )
                elif best.kept >= 0.95:
                    lines.append(
                        f"**{defense}** keeps its oblivious gain under the adaptive attack "
                        f"against {where}: {numbers}. {_KEPT_CAVEAT}"
                    )
                else:
                    lines.append(
                        f"**{defense}** keeps {100 * best.kept:.0f}% of its oblivious gain "
                        f"under the adaptive attack against {where}: {numbers}. {_KEPT_CAVEAT}"
                    )
    return lines


def _accuracy_tables(
    plan: AttackPlan, rows: dict[str, CellRow], models: list[PlannedModel]
) -> list[Block]:
    blocks: list[Block] = []
    series = _series(plan)
    for model in models:
        for attack in dict.fromkeys(s.label for s in plan.settings if not s.unbounded):
            settings = [s for s in plan.settings if s.label == attack]
            header = [
                "defence (protocol)",
                *(_setting_text(s.severity_name, s.severity) for s in settings),
            ]
            body = []
            for (model_id, label, stored), cells in series.items():
                if model_id != model.id or label != attack:
                    continue
                values = [rows.get(c.key) for c in cells]
                body.append([stored, *(_pct(r.accuracy) if r else "–" for r in values)])
            n = {
                r.n
                for c in plan.cells
                if c.model.id == model.id and c.setting.label == attack
                if (r := rows.get(c.key)) is not None
            }
            blocks.append(
                Table(
                    header,
                    body,
                    caption=f"{model.id}, {attack} "
                    f"({_describe(settings[0].params, settings[0].severity_name)}): robust "
                    f"accuracy in % of {', '.join(str(v) for v in sorted(n)) or '?'} test images",
                )
            )
    return blocks


def _output_quality_tables(plan: AttackPlan, rows: dict[str, CellRow]) -> list[Block]:
    """PSNR and SSIM of what the classifier sees, against the clean image (huang2021 Table 2).

    One table per attack: rows are the (model, defence, protocol) whose input a defence or a
    denoiser transforms, columns the attack's settings.
    """
    blocks: list[Block] = []
    series = _series(plan)
    for attack in dict.fromkeys(s.label for s in plan.settings if not s.unbounded):
        settings = [s for s in plan.settings if s.label == attack]
        body = []
        for (model_id, label, stored), cells in series.items():
            if label != attack:
                continue
            values = [rows.get(c.key) for c in cells]
            metrics = [r.metrics if r is not None else {} for r in values]
            if not any("output_ssim" in m for m in metrics):
                continue
            body.append(
                [
                    model_id,
                    stored,
                    *(
                        "–"
                        if "output_ssim" not in m
                        else f"{m['output_psnr']:.1f} / {m['output_ssim']:.3f}"
                        if m.get("output_psnr") is not None
                        else f"identical / {m['output_ssim']:.3f}"
                        for m in metrics
                    ),
                ]
            )
        if body:
            blocks.append(
                Table(
                    [
                        "model",
                        "defence (protocol)",
                        *(_setting_text(s.severity_name, s.severity) for s in settings),
                    ],
                    body,
                    caption=f"{attack}: PSNR (dB) / SSIM of the image the classifier sees (the "
                    "defence's output, and a denoiser's) against the clean image",
                )
            )
    if blocks:
        blocks.insert(0, Heading("Image quality after the defence", 3))
    return blocks


def _setting_text(name: str | None, value: float | None) -> str:
    return _AS_CONFIGURED if name is None or value is None else f"{name}={value:g}"


def _describe(params: dict[str, object], swept: str | None) -> str:
    fixed = ", ".join(f"{k}={v}" for k, v in params.items() if k != swept)
    return fixed or "defaults"


def _worst_case_blocks(
    plan: AttackPlan, store: ResultsStore, models: list[PlannedModel]
) -> list[Block]:
    worst = worst_case(plan, store)
    if not worst:
        return []
    budgets = sorted({(norm, eps) for (_, _, norm, eps) in worst})
    blocks: list[Block] = [
        Heading("Worst case per sample", 3),
        Paragraph(
            "A sample counts as robust at a budget only if it is classified correctly after "
            "every attack and protocol run at that budget (all attack settings with the same "
            "norm and eps, oblivious and adaptive). This is the robust accuracy to quote."
        ),
    ]
    for model in models:
        header = ["defence", *(f"{norm} {eps:g}" for norm, eps in budgets)]
        body = []
        for defense in plan.defenses:
            cells = []
            for norm, eps in budgets:
                found = worst.get((model.id, defense.label, norm, eps))
                cells.append("–" if found is None else _pct(found[0] / found[1]))
            body.append([defense.label, *cells])
        runs = {len(v[2]) for k, v in worst.items() if k[0] == model.id}
        blocks.append(
            Table(
                header,
                body,
                caption=f"{model.id}: worst-case robust accuracy in % (minimum per sample over "
                f"{'/'.join(str(r) for r in sorted(runs))} attack runs per budget)",
            )
        )
    return blocks


def sanity_flags(
    plan: AttackPlan, store: ResultsStore, rows: dict[str, CellRow], dims: int
) -> list[tuple[str, SanityFlag]]:
    """Every tripped sanity flag, with where it tripped."""
    flags: list[tuple[str, SanityFlag]] = []
    for (model, attack, stored), cells in _series(plan).items():
        done = [(c, rows[c.key]) for c in cells if c.key in rows]
        swept = [
            (c.setting.severity, r.accuracy) for c, r in done if c.setting.severity is not None
        ]
        where = f"{model}, {stored}, {attack}"
        name = cells[0].setting.severity_name or "strength"
        rises = accuracy_rises([v for v, _ in swept], [a for _, a in swept], name=name)
        if rises is not None:
            flags.append((where, rises))
        zero = 0
        vanishing = 0
        unstable = 0
        total = 0
        for cell, row in done:
            records = store.records(cell.key)
            if records is None:
                continue
            zero = max(zero, int(records["zero_gradient"].sum()))
            if "vanishing_gradient" in records:  # stores written before the flag existed
                vanishing = max(vanishing, int(records["vanishing_gradient"].sum()))
            unstable = max(unstable, int(records["unstable"].sum()))
            total = row.n
            if cell.defense.name == "none" and cell.setting.eps is not None:
                flag = large_eps_survivors(
                    cell.setting.norm, cell.setting.eps, dims, row.n - row.errors, row.n
                )
                if flag is not None:
                    flags.append((f"{where}, eps={cell.setting.eps:g}", flag))
        for flag in (
            zero_gradients(zero, total),
            vanishing_gradients(vanishing, total),
            unstable_predictions(unstable, total),
            _black_box_inside(store, done),
        ):
            if flag is not None:
                flags.append((where, flag))
    flags += _black_box_across(plan, rows)
    return flags


def _tags(name: str) -> tuple[str, ...]:
    return ATTACKS.entry(name).tags if name in ATTACKS else ()


def _black_box_inside(
    store: ResultsStore, done: list[tuple[AttackCell, CellRow]]
) -> SanityFlag | None:
    """Samples an ensemble's black-box member fooled after its white-box members failed."""
    worst: SanityFlag | None = None
    most = 0
    for cell, row in done:
        notes = row.metrics.get("attack_notes") or {}
        names = list(notes.get("attacks", []))
        blind = [i for i, n in enumerate(names) if "gradient" not in _tags(_component(n))]
        records = store.records(cell.key) if blind else None
        if records is None or "detail_found_by" not in records:
            continue
        count = int(np.isin(records["detail_found_by"], blind).sum())
        white = ", ".join(n for i, n in enumerate(names) if i not in blind) or "no attack"
        flag = black_box_wins(
            "/".join(names[i] for i in blind), count, row.n, white_box=f"{white} (before it)"
        )
        if flag is not None and count > most:
            worst, most = flag, count
    return worst


def _component(name: str) -> str:
    """The registered attack behind an ``autoattack`` member (``apgd-t`` -> ``apgd``)."""
    return name.split("-")[0]


def _black_box_across(plan: AttackPlan, rows: dict[str, CellRow]) -> list[tuple[str, SanityFlag]]:
    """A black-box attack more successful than every white-box attack at the same budget."""
    budgets: dict[tuple[str, str, str, float], list[AttackCell]] = defaultdict(list)
    for cell in plan.cells:
        if cell.setting.eps is not None and cell.key in rows:
            budgets[
                (cell.model.id, cell.defense_label, cell.setting.norm, cell.setting.eps)
            ].append(cell)
    flags = []
    for (model, defense, norm, eps), cells in budgets.items():
        white = [c for c in cells if "gradient" in _tags(c.setting.name)]
        black = [c for c in cells if "gradient" not in _tags(c.setting.name)
                 and "black-box" in _tags(c.setting.name)]  # fmt: skip
        if not white or not black:
            continue
        best_white = min(white, key=lambda c: rows[c.key].accuracy)
        for cell in black:
            gap = rows[best_white.key].accuracy - rows[cell.key].accuracy
            if gap > BLACK_BOX_TOLERANCE:
                flags.append(
                    (
                        f"{model}, {defense}, {norm} eps={eps:g}",
                        SanityFlag(
                            "black-box-wins",
                            f"the black-box attack {cell.setting.label} leaves "
                            f"{_pct(rows[cell.key].accuracy)}% robust, below the strongest "
                            f"white-box attack's {_pct(rows[best_white.key].accuracy)}% "
                            f"({best_white.setting.label}): a white-box attacker knows more, so "
                            "its gradients misled it here (gradient masking)",
                        ),
                    )
                )
    return flags


def overstated(
    plan: AttackPlan, rows: dict[str, CellRow]
) -> list[tuple[str, str, str, float, AttackCell, float, AttackCell, float]]:
    """Attacks that leave more than :data:`OVERSTATED` standing above the strongest one.

    Returns:
        ``(model, defence (protocol), norm, eps, weaker cell, its accuracy, strongest cell, its
        accuracy)`` for every such case, at every budget measured by two or more attacks.
    """
    budgets: dict[tuple[str, str, str, float], list[AttackCell]] = defaultdict(list)
    for cell in plan.cells:
        if cell.setting.eps is not None and cell.setting.eps > 0 and cell.key in rows:
            budgets[
                (cell.model.id, cell.defense_label, cell.setting.norm, cell.setting.eps)
            ].append(cell)
    out = []
    for (model, defense, norm, eps), cells in budgets.items():
        if len({c.setting.label for c in cells}) < 2:
            continue
        strongest = min(cells, key=lambda c: rows[c.key].accuracy)
        for cell in cells:
            accuracy = rows[cell.key].accuracy
            if accuracy - rows[strongest.key].accuracy > OVERSTATED:
                out.append(
                    (model, defense, norm, eps, cell, accuracy, strongest,
                     rows[strongest.key].accuracy)
                )  # fmt: skip
    return out


def _where(cases: int, total: int) -> str:
    """``at the only budget compared`` / ``in 2 of the 6 defence-and-budget comparisons``."""
    if total == 1:
        return "at the only budget compared"
    return f"in {cases} of the {total} defence-and-budget comparisons"


def _overstated_blocks(plan: AttackPlan, rows: dict[str, CellRow]) -> list[Block]:
    """In words: where an attack (PGD, typically) overstated a model's or defence's robustness."""
    budgets = {
        (c.model.id, c.defense_label, c.setting.norm, c.setting.eps)
        for c in plan.cells
        if c.setting.eps is not None and c.setting.eps > 0 and c.key in rows
    }
    compared = [
        b for b in budgets
        if len({c.setting.label for c in plan.cells if c.key in rows
                and (c.model.id, c.defense_label, c.setting.norm, c.setting.eps) == b}) > 1
    ]  # fmt: skip
    if not compared:
        return []
    found = overstated(plan, rows)
    lines = []
    by_attack: dict[tuple[str, str], list[tuple[str, str, float, float, float, str]]] = defaultdict(
        list
    )
    for model, defense, norm, eps, weak, weak_acc, strong, strong_acc in found:
        by_attack[(weak.setting.label, model)].append(
            (defense, norm, eps, weak_acc, strong_acc, strong.setting.label)
        )
    for (attack, model), cases in by_attack.items():
        total = sum(1 for b in compared if b[0] == model)
        worst = max(cases, key=lambda c: c[3] - c[4])
        defenses = ", ".join(dict.fromkeys(c[0] for c in cases))
        lines.append(
            f"**{attack} overstated robustness** ({model}) {_where(len(cases), total)}, "
            f"for {defenses}: by up to {100 * (worst[3] - worst[4]):.1f} points "
            f"({worst[0]}, {worst[1]} eps={worst[2]:g}: {_pct(worst[3])}% under {attack}, "
            f"{_pct(worst[4])}% under {worst[5]}). Quote the stronger attack's number."
        )
    if not lines:
        lines.append(
            f"Every attack's robust accuracy is within {100 * OVERSTATED:.0f} point of the "
            f"strongest attack's at each of the {len(compared)} budgets measured by more than "
            "one attack: none overstated robustness here."
        )
    return [Heading("Did any attack overstate robustness?", 3), Bullets(lines)]


def _minimum_norm_blocks(
    plan: AttackPlan, rows: dict[str, CellRow], store: ResultsStore, models: list[PlannedModel]
) -> list[Block]:
    """Minimum-norm attacks without a budget: the robust-accuracy curve over every eps."""
    plt = pyplot()
    cells = [c for c in plan.cells if c.setting.unbounded and c.key in rows]
    if not cells:
        return []
    budgets = sorted({(c.setting.norm, c.setting.eps) for c in plan.cells
                      if c.setting.eps is not None and c.setting.eps > 0})  # fmt: skip
    body = []
    curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = defaultdict(list)
    for cell in cells:
        records = store.records(cell.key)
        if records is None:
            continue
        fooled = records["predicted"] != records["label"]
        distance = records["distance"].astype(np.float64)
        moved = fooled & (distance > 0)
        median = float(np.median(distance[moved])) if moved.any() else math.nan
        norm = cell.setting.norm
        at = [
            f"{100 * robust_accuracy_curve(distance, fooled, [eps])[0]:.1f}"
            for n, eps in budgets
            if n == norm and eps is not None
        ]
        body.append(
            [cell.model.id, cell.defense_label, cell.setting.label, norm,
             f"{100 * moved.mean():.1f}", f"{median:.4g}", "; ".join(at) or "–"]
        )  # fmt: skip
        top = float(np.quantile(distance[moved], 0.98)) * 1.1 if moved.any() else 1.0
        grid = np.linspace(0.0, max(top, 1e-6), 120)
        curves[cell.model.id].append(
            (f"{cell.defense_label} · {cell.setting.label} ({norm})", grid,
             robust_accuracy_curve(distance, fooled, grid))
        )  # fmt: skip
    shown = ", ".join(f"{n} {e:g}" for n, e in budgets) or "none"
    blocks: list[Block] = [
        Heading("Minimum-norm attacks: robust accuracy at every eps", 3),
        Paragraph(
            "A minimum-norm attack finds each image's smallest adversarial perturbation, so "
            "one run gives the robust accuracy at every budget: an image is robust at eps when "
            "the attack never flipped it or needed more than eps. These runs also take part in "
            "the per-sample worst case at every budget of their norm."
        ),
        Table(
            [
                "model",
                "defence (protocol)",
                "attack",
                "norm",
                "fooled %",
                "median smallest perturbation",
                f"robust % at the study's budgets ({shown})",
            ],
            body,
            caption="Minimum-norm attacks: share of test images flipped, the median norm of "
            "the perturbation that flipped them, and robust accuracy read off the curve",
        ),
    ]
    for model in models:
        lines = curves.get(model.id)
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(5.6, 3.4))
        for label, grid, accuracy in lines:
            ax.plot(grid, accuracy, label=label, lw=1.4)
        ax.set_xlabel("perturbation budget eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        blocks.append(
            Figure(
                f"minimum-norm-{model.id}",
                buffer.getvalue(),
                f"{model.id}: robust accuracy against the budget, from one minimum-norm run "
                "per defence.",
            )
        )
    return blocks


def _ensemble_notes(plan: AttackPlan, rows: dict[str, CellRow]) -> list[str]:
    """What an attack ensemble (``autoattack``) ran, and where it switched to EOT."""
    lines = []
    for cell in plan.cells:
        row = rows.get(cell.key)
        notes = (row.metrics.get("attack_notes") or {}) if row is not None else {}
        if not notes.get("attacks"):
            continue
        version = notes.get("version", "")
        text = f"{cell.setting.label}: ran {', '.join(notes['attacks'])} ({version} version)"
        if notes.get("random_model"):
            draws = notes.get("eot_samples") or "the pipeline's own"
            text += (
                f"; {cell.model.id} with {cell.defense_label} is random (two forward passes "
                f"differ), so gradients were averaged over {draws} draws (EOT)"
            )
        lines.append(text)
    return list(dict.fromkeys(lines))


def _curves(
    plan: AttackPlan, rows: dict[str, CellRow], store: ResultsStore, model: PlannedModel
) -> bytes | None:
    plt = pyplot()
    attacks = list(dict.fromkeys(s.label for s in plan.settings if not s.unbounded))
    defenses = [d.label for d in plan.defenses]
    if not attacks or not defenses:
        return None
    worst = worst_case(plan, store)
    fig, grid = plt.subplots(
        len(attacks), len(defenses), figsize=(3.4 * len(defenses), 2.9 * len(attacks)),
        squeeze=False, sharey=True,
    )  # fmt: skip
    styles = {"oblivious": ("#1f77b4", "-"), "adaptive": ("#d62728", "--")}
    drew = False
    for ai, attack in enumerate(attacks):
        settings = [s for s in plan.settings if s.label == attack]
        name = settings[0].severity_name or "strength"
        for di, defense in enumerate(defenses):
            ax = grid[ai][di]
            for protocol, (colour, style) in styles.items():
                points = [
                    (c.setting.severity, rows[c.key].accuracy)
                    for c in plan.cells
                    if c.model.id == model.id and c.setting.label == attack
                    and c.defense.label == defense and c.protocol == protocol
                    and c.key in rows and c.setting.severity is not None
                ]  # fmt: skip
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, marker="o", ms=3, color=colour, ls=style, label=protocol)
                    drew = True
            if name == "eps":
                wc = sorted(
                    (eps, v[0] / v[1])
                    for (m, d, norm, eps), v in worst.items()
                    if m == model.id and d == defense and norm == settings[0].norm and v[1]
                )
                if wc:
                    xs, ys = zip(*wc, strict=True)
                    ax.plot(xs, ys, color="black", ls=":", lw=1.2, label="worst case")
                positive = [s.severity for s in settings if s.severity]
                if positive and max(positive) / min(positive) > 20:
                    ax.set_xscale("symlog", linthresh=min(positive))
            ax.set_title(f"{defense} · {attack}", fontsize=9)
            ax.set_xlabel(name, fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        grid[ai][0].set_ylabel("robust accuracy", fontsize=8)
    if not drew:
        plt.close(fig)
        return None
    # Every panel's lines, once per label: the first panel may have none (an attack without a
    # swept strength draws no curve).
    legend: dict[str, Any] = {}
    for row in grid:
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend),
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def attack_blocks(plan: AttackPlan, store: ResultsStore, models: list[PlannedModel]) -> list[Block]:
    """The attack section of the report, from the stored attack plan.

    Args:
        plan: the study's attack plan as stored (:meth:`AttackPlan.from_json`).
        store: the results store of the run.
        models: the study's models.
    """
    rows = {r.key: r for r in store.cells([c.key for c in plan.cells])}
    shape = store.get_meta("dataset", {}).get("image_shape") or [1, 1, 1]
    dims = math.prod(int(v) for v in shape)
    done, total = len(rows), len({c.key for c in plan.cells})
    blocks: list[Block] = [
        Heading("Adversarial attacks", 2),
        Paragraph(
            f"Attack cells: {done} of {total}"
            f"{'' if done == total else ' (INCOMPLETE)'}. **Oblivious**: adversarial "
            "examples are made against the bare classifier and then passed through the defence "
            "(huang2021's protocol). **Adaptive**: the attack differentiates the whole "
            "defended pipeline, so a defence gets no credit for merely being ignored by the "
            "attacker. Robust accuracy is measured on the real defence in both cases."
        ),
    ]
    methods = plan.methods + _ensemble_notes(plan, rows)
    if methods:
        blocks.append(Bullets(methods))
    findings = _findings(plan, rows, [m.id for m in models])
    if findings:
        blocks += [Heading("Oblivious vs adaptive", 3), Bullets(findings)]
    flags = sanity_flags(plan, store, rows, dims)
    blocks.append(Heading("Sanity flags", 3))
    if flags:
        blocks.append(Bullets([f"{where}: {flag}" for where, flag in flags]))
    else:
        blocks.append(
            Paragraph(
                "None tripped: accuracy never rises with the attack strength, the undefended "
                "model is fooled everywhere at very large budgets (where run), input "
                "gradients neither vanish nor are exactly zero and predictions do not change "
                "between calls."
            )
        )
    blocks += _overstated_blocks(plan, rows)
    blocks += _accuracy_tables(plan, rows, models)
    blocks += _output_quality_tables(plan, rows)
    blocks += _worst_case_blocks(plan, store, models)
    blocks += _minimum_norm_blocks(plan, rows, store, models)
    for model in models:
        png = _curves(plan, rows, store, model)
        if png is not None:
            blocks.append(
                Figure(
                    f"attacks-{model.id}",
                    png,
                    f"{model.id}: robust accuracy vs attack strength per defence; oblivious "
                    "(solid) vs adaptive (dashed); dotted: per-sample worst case over every "
                    "attack at that budget.",
                )
            )
    return blocks
