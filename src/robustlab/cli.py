"""The ``robustlab`` command line.

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(app, ["list", "defenses"])
    >>> "median" in result.output
    True
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robustlab.attack import ATTACKS
from robustlab.data.datasets import DATASETS
from robustlab.defend import DEFENSES, create_defense
from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import RobustlabError
from robustlab.models import MODELS
from robustlab.registry import Registry
from robustlab.seeding import make_generator
from robustlab.spec import parse_spec
from robustlab.tensors import to_uint8
from robustlab.train.strategy import STRATEGIES, load_builtin_strategies

app = typer.Typer(
    help="Measure and improve how well image classifiers survive degraded and attacked inputs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (MNIST/raw/, FashionMNIST/raw/, cifar-10-batches-bin/, SVHN/, "
        "GTSRB/, relative folder: datasets); default $ROBUSTLAB_DATA, then the user cache "
        "(~/.cache/robustlab/data). Missing files are downloaded there.",
    ),
]


def _fail(err: Exception) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {err}", highlight=False)
    return typer.Exit(code=2)


@app.command()
def run(
    config: Annotated[
        str | None,
        typer.Argument(
            help="Study YAML file, or a built-in study name (quickstart, papers/lin2022). "
            "Default: the quickstart study."
        ),
    ] = None,
    data_dir: DataDir = None,
    device: Annotated[
        str, typer.Option(help="auto (CUDA if available), cpu or cuda[:N].")
    ] = "auto",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run directory (default: the study's).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    study: Annotated[
        list[str] | None,
        typer.Option(
            "--study",
            "-s",
            help="Run only this study of a multi-study file (repeatable); default: all.",
        ),
    ] = None,
) -> None:
    """Run a study: train (or reuse cached) models, evaluate every cell, write the report.

    Models are trained with their strategies (parents first, each once; see `robustlab list
    strategies`); cells are degradations, attacks (oblivious and adaptive) and the minimal-noise
    search the study file names, for every model and defence. Rerunning the same study skips
    finished cells and cached models, so an interrupted run (Ctrl-C, kill) resumes where it
    stopped.
    """
    from robustlab.study.runner import resolve_config_path, run_studies

    try:
        path = resolve_config_path(config)
        if not quiet:
            errors.print(f"study file: {path}")
        results = run_studies(
            path,
            data_dir=data_dir,
            device=device,
            run_dir=output,
            progress=not quiet,
            only=study or None,
        )
    except KeyboardInterrupt:
        errors.print(
            "[yellow]interrupted[/]: finished cells and trained epochs are saved; "
            "run the same command again to resume."
        )
        raise typer.Exit(code=130) from None
    except RobustlabError as err:
        raise _fail(err) from None
    for result in results:
        searches = (
            f", {result.searches_run} minimal-noise searches ({result.searches_total} in the study)"
            if result.searches_total
            else ""
        )
        console.print(
            f"{result.run_dir.name}: {result.cells_run} cells computed "
            f"({result.cells_total} in the study){searches} in {result.seconds:.1f} s"
        )
        console.print(f"report:  {result.report_html}")
        console.print(f"         {result.report_md}")
        console.print(f"results: {result.results_csv}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory holding results.sqlite.")],
) -> None:
    """Rebuild report.md and report.html of a run directory from its results store alone."""
    from robustlab.report.build import build_report

    try:
        md, html = build_report(run_dir)
    except RobustlabError as err:
        raise _fail(err) from None
    console.print(f"report:  {html}\n         {md}")


def _read_image(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as img:
            mode = "L" if img.mode in ("1", "L", "I", "I;16", "F", "LA") else "RGB"
            array = np.asarray(img.convert(mode), dtype=np.uint8)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise RobustlabError(f"cannot read image {path}: {err}") from err
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


@app.command()
def degrade(
    input: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, ...), grey or RGB.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the result.")],
    degradation: Annotated[
        list[str] | None,
        typer.Option(
            "--degradation",
            "-d",
            help="Degradation SPEC, applied in the order given: name or name:key=value,... "
            "e.g. salt_pepper:amount=0.2",
        ),
    ] = None,
    defense: Annotated[
        str | None, typer.Option(help="Input defence SPEC applied last, e.g. median:size=3.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random draws.")] = 0,
) -> None:
    """Apply degradations, then an input defence, to one image and write the result."""
    try:
        x = _read_image(input)
        generator = make_generator(seed)
        for spec in degradation or []:
            name, params = parse_spec(spec)
            x = create_degradation(name, **params)(x, generator)
        if defense:
            name, params = parse_spec(defense)
            with torch.no_grad():
                x = create_defense(name, **params)(x)
        pixels = to_uint8(x)[0].permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        output.parent.mkdir(parents=True, exist_ok=True)
        image.save(output)
    except RobustlabError as err:
        raise _fail(err) from None
    except (ValueError, OSError) as err:
        raise _fail(RobustlabError(f"cannot write {output}: {err}")) from None
    console.print(f"wrote {output}")


class Split(str, enum.Enum):
    """Which split ``robustlab attack`` attacks."""

    test = "test"
    train = "train"


@app.command()
def attack(
    model: Annotated[
        Path, typer.Option("--model", help="A saved robustlab model (.safetensors + .json card).")
    ],
    data: Annotated[str, typer.Option("--data", help="Dataset name, e.g. mnist.")],
    attack_spec: Annotated[
        str,
        typer.Option("--attack", help="Attack SPEC, e.g. pgd:eps=0.3,steps=40,norm=linf."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the .npz of examples.")],
    split: Annotated[Split, typer.Option(help="Which split to attack.")] = Split.test,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Attack only the first N images.")
    ] = None,
    defense: Annotated[
        str | None, typer.Option(help="Input defence SPEC in front of the model, e.g. median.")
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive/--oblivious",
            help="Attack the whole defended pipeline (BPDA/EOT where needed), or the bare "
            "model and then pass the examples through the defence.",
        ),
    ] = True,
    device: Annotated[
        str, typer.Option(help="auto (CUDA if available), cpu or cuda[:N].")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attack's random draws.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per attack batch.")] = 256,
    data_dir: DataDir = None,
) -> None:
    """Attack a saved model on a dataset; print clean and robust accuracy and sanity flags.

    The .npz holds clean and adversarial images (float32, exact), labels, and the defended
    model's predictions on both, so every number can be checked independently.
    """
    from robustlab.attack.evaluate import create_attack, evaluate_attack
    from robustlab.data import load_dataset
    from robustlab.device import resolve_device
    from robustlab.models import load_model

    try:
        torch_device = resolve_device(device)
        attacker = create_attack(attack_spec)
        front = None
        if defense:
            name, params = parse_spec(defense)
            front = create_defense(name, **params)
        net = load_model(model, device=str(torch_device))
        dataset = load_dataset(data, data_dir=str(data_dir) if data_dir else None)
        images = (dataset.test if split is Split.test else dataset.train).subset(limit)
        result = evaluate_attack(
            net, images, attacker, front, adaptive=adaptive, device=torch_device, seed=seed,
            batch_size=batch_size,
        )  # fmt: skip
        result.save(
            out, attack=attack_spec, defense=defense or "none",
            protocol="adaptive" if adaptive else "oblivious",
        )  # fmt: skip
    except RobustlabError as err:
        raise _fail(err) from None
    except OSError as err:
        raise _fail(RobustlabError(f"cannot write {out}: {err}")) from None
    n = len(result)
    clean = int((result.clean_predictions == result.labels).sum())
    robust = int((result.predictions == result.labels).sum())
    protocol = "adaptive" if adaptive else "oblivious"
    console.print(f"attack:   {attack_spec} ({protocol})", highlight=False)
    console.print(f"defence:  {defense or 'none'} ({result.method})")
    console.print(f"clean accuracy:  {result.clean_accuracy:.4f} ({clean} of {n})")
    console.print(f"robust accuracy: {result.robust_accuracy:.4f} ({robust} of {n})")
    for flag in result.flags:
        console.print(f"[bold yellow]sanity flag[/] {escape(str(flag))}", highlight=False)
    console.print(f"wrote {out}")


class Kind(str, enum.Enum):
    """What ``robustlab list`` can show."""

    all = "all"
    datasets = "datasets"
    models = "models"
    degradations = "degradations"
    defenses = "defenses"
    attacks = "attacks"
    strategies = "strategies"
    suites = "suites"


def _registry_table(title: str, registry: Registry[object]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("parameters")
    table.add_column("description")
    for entry in registry:
        params = []
        for p in entry.parameters:
            text = escape(str(p))
            params.append(f"[bold]{text}[/]" if p.name == entry.severity else text)
        table.add_row(entry.name, "\n".join(params) or "–", escape(entry.summary))
    return table


@app.command("list")
def list_pieces(
    kind: Annotated[Kind, typer.Argument(help="Which registry to show.")] = Kind.all,
) -> None:
    """List datasets, models, degradations, defences, attacks, training strategies and suites.

    The parameter a study sweeps by default (its severity) is shown in bold.
    """
    shown: list[tuple[str, Registry[object]]] = [
        ("datasets", DATASETS),  # type: ignore[list-item]
        ("models", MODELS),  # type: ignore[list-item]
        ("degradations", DEGRADATIONS),  # type: ignore[list-item]
        ("defenses", DEFENSES),  # type: ignore[list-item]
        ("attacks", ATTACKS),  # type: ignore[list-item]
        ("strategies", STRATEGIES),  # type: ignore[list-item]
    ]
    load_builtin_strategies()
    for name, registry in shown:
        if kind in (Kind.all, Kind(name)):
            console.print(_registry_table(name, registry))
    if kind in (Kind.all, Kind.suites):
        from robustlab.degrade.suites import SUITES

        table = Table(
            title="suites (degradations: [{suite: NAME}] in a study)", title_justify="left"
        )
        table.add_column("suite", style="bold cyan", no_wrap=True)
        table.add_column("label")
        table.add_column("degradation")
        table.add_column("severities")
        for suite, entries in SUITES.items():
            for i, e in enumerate(entries):
                values = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in e.values)
                table.add_row(
                    suite if i == 0 else "", e.label, e.degradation, f"{e.parameter}: {values}"
                )
        console.print(table)


def main() -> None:
    """Entry point that also honours ``ROBUSTLAB_DEBUG=1`` (full tracebacks)."""
    if os.environ.get("ROBUSTLAB_DEBUG"):
        app.pretty_exceptions_enable = True
    from robustlab.device import tune_cpu_allocator

    tune_cpu_allocator()
    app()
