"""Build ``report.md`` and ``report.html`` from a run directory's results store alone.

The store holds the study as run: its validated configuration and its *resolved plan* (the
models with their artefact graph and every part's cells or jobs, written by the runner). The
report decodes that plan, reads the finished results and lays out: the study's status, the
findings of every part, the models (strategy, parent, training time, images seen), then each
part's sections (:mod:`robustlab.study.parts`). It never re-plans the study, imports a user's
file, builds a defence or loads a model.

Example:
    >>> # build_report(Path("runs/quickstart")) -> (report.md path, report.html path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlab.atomic import write_text_atomic
from robustlab.errors import RobustlabError
from robustlab.report.composite_sections import composite_blocks
from robustlab.report.document import (
    Block,
    Bullets,
    Details,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from robustlab.report.leaderboard import leaderboard_blocks
from robustlab.study.config import StudyConfig
from robustlab.study.plan import PlannedModel
from robustlab.study.store import STORE_NAME, ResultsStore

PLAN_META = "plan"  # the store's meta entry holding the resolved plan
PLAN_VERSION = 1


def encode_plan(models: list[PlannedModel], parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The resolved plan as stored: models (parents first) and each used part's plan."""
    return {
        "version": PLAN_VERSION,
        "models": [m.to_json() for m in models],
        "parts": parts,
    }


def decode_models(stored: dict[str, Any]) -> list[PlannedModel]:
    """The stored models, parents resolved (they are stored before their children)."""
    known: dict[str, PlannedModel] = {}
    for data in stored["models"]:
        known[data["id"]] = PlannedModel.from_json(data, known)
    return list(known.values())


def _stored_plan(store: ResultsStore) -> dict[str, Any]:
    stored = store.get_meta(PLAN_META)
    if stored is None or stored.get("version") != PLAN_VERSION:
        raise RobustlabError(
            f"{store.path} holds no resolved plan of this robustlab version (it was written by "
            "an older one); run the study once more into the same run directory "
            "(`robustlab run STUDY.yaml -o RUN_DIR`): finished cells are kept and not "
            "recomputed, and the report is written again"
        )
    return dict(stored)


def _model_rows(models: list[PlannedModel], cards: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m in models:
        card = cards.get(m.id, {}).get("card", {})
        accuracy = card.get("clean_accuracy")
        train_accuracy = card.get("train_accuracy")
        # A quality network's card accuracy is over its bins, not the dataset's classes.
        prefix = "bins " if m.recipe is not None and m.recipe.kind == "quality" else ""
        seconds = card.get("train_seconds")
        seen = card.get("images_seen")
        parents = ", ".join(f"{pid} ({role})" for role, pid in m.parent_ids.items())
        rows.append(
            [
                m.id,
                m.architecture,
                m.strategy,
                parents or "–",
                "–" if m.epochs is None else str(m.epochs),
                m.training,
                str(card.get("train_size", "–")),
                "–" if seen is None else f"{seen:,}",
                "–" if not seconds else f"{seconds:.1f}",
                "–" if train_accuracy is None else f"{prefix}{train_accuracy:.4f}",
                "–" if accuracy is None else f"{prefix}{accuracy:.4f}",
                str(card.get("cache_key", "–")),
            ]
        )
    return rows


def _trained_defenses(stored: dict[str, Any]) -> list[str]:
    """One line per defence that runs a denoiser trained by the study, naming its classifier."""
    lines: dict[str, str] = {}
    for part in stored["parts"].values():
        for d in part.get("defenses", []) if isinstance(part, dict) else []:
            if d.get("artefact") is not None:
                lines[d["label"]] = (
                    f"Defence `{d['label']}` is the trained denoiser {d['artefact']}, in front of "
                    f"every model; it was trained for {d.get('trained_for') or 'no classifier'}."
                )
    return list(lines.values())


def report_blocks(store: ResultsStore) -> tuple[list[Block], str]:
    """The report's blocks and title, computed from ``store`` alone."""
    from robustlab.study.parts import ReportContext, study_parts

    stored = _stored_plan(store)
    config = StudyConfig.model_validate(store.get_meta("config"))
    models = decode_models(stored)
    dataset = store.get_meta("dataset", {})
    environment = store.get_meta("environment", {})
    classes = list(dataset.get("classes", []))
    evaluated = [m for m in models if m.evaluated]  # quality networks have no cells
    context = ReportContext(config, store, evaluated, classes, dataset)
    parts = [
        (part, part.decode(stored["parts"][part.name], evaluated))
        for part in study_parts()
        if part.name in stored["parts"]
    ]
    context.plans = {part.name: plan for part, plan in parts}
    title = f"robustlab study: {config.name}"

    blocks: list[Block] = [Heading(title, 1)]
    if config.description:
        blocks.append(Paragraph(config.description.strip()))
    done = sum(part.done(plan, store) for part, plan in parts)
    total = sum(part.size(plan) for part, plan in parts)
    status = "complete" if done == total else f"INCOMPLETE: {done} of {total}"
    blocks.append(
        Paragraph(
            f"Dataset `{dataset.get('name', config.dataset.name)}`: "
            f"{dataset.get('train_size', '?'):,} training and {dataset.get('test_size', '?'):,} "
            f"test images. Results: {done} of {total} ({status}). "
            f"Trials per random setting: {config.trials}. Device: {environment.get('device', '?')}."
        )
    )
    if dataset.get("notes"):
        blocks.append(Bullets(list(dataset["notes"])))
    scores = [part.leaderboard(plan, store) for part, plan in parts]
    blocks += leaderboard_blocks(
        [s for s in scores if s is not None], models, store, config.baseline_model
    )

    findings = [line for part, plan in parts for line in part.findings(plan, context)]
    if findings:
        blocks += [Heading("Findings", 2), Bullets(findings)]

    blocks += [
        Heading("Models", 2),
        Table(
            [
                "model",
                "architecture",
                "strategy",
                "parent",
                "epochs",
                "training",
                "train images",
                "images seen",
                "train s",
                "train accuracy",
                "clean accuracy",
                "cache key",
            ],
            _model_rows(models, store.models()),
        ),
    ]
    planned_ids = {m.id for m in models}  # a store may keep models an earlier plan had
    blocks += composite_blocks({k: v for k, v in store.models().items() if k in planned_ids})
    trained_fronts = _trained_defenses(stored)
    if trained_fronts:
        blocks.append(Bullets(trained_fronts))
    for part, plan in parts:
        blocks += part.lead_blocks(plan, context)
    for part, plan in parts:
        blocks += part.report_blocks(plan, context)

    seconds = sum(r.seconds for r in store.cells())
    blocks.append(
        Details(
            "Run details",
            [
                Bullets(
                    [
                        f"evaluation time (sum over cells): {seconds:.1f} s",
                        f"environment: {environment}",
                        "results: `results.csv` (one row per cell), `results.sqlite` (store), "
                        "`models.json` (models used, with their parents), `config.yaml` "
                        "(validated study)",
                    ]
                )
            ],
        )
    )
    return blocks, title


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` (+ ``report_files/``) and ``report.html`` into ``run_dir``."""
    run_dir = Path(run_dir)
    store_path = run_dir / STORE_NAME
    if not store_path.exists():
        raise RobustlabError(
            f"{run_dir} holds no {STORE_NAME}: it is not a run directory; give the run directory "
            f"of a study (`robustlab run STUDY.yaml -o {run_dir}` makes one)"
        )
    # The whole report is computed before anything is written, and every file is replaced
    # atomically: a refused store or a failure (a full disk) leaves the previous report.
    store = ResultsStore(store_path, create=False)
    try:
        blocks, title = report_blocks(store)
    finally:
        store.close()
    md_path = run_dir / "report.md"
    html_path = run_dir / "report.html"
    html = to_html(blocks, title)
    write_text_atomic(md_path, to_markdown(blocks, run_dir / "report_files"))
    write_text_atomic(html_path, html)
    return md_path, html_path
