"""The ``robustlab`` command line.

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(app, ["list", "defenses"])
    >>> "median" in result.output
    True
"""

from __future__ import annotations

import csv
import enum
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import numpy as np
import torch
import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robustlab.atomic import atomic_path
from robustlab.attack import ATTACKS
from robustlab.data.datasets import DATASETS
from robustlab.defend import DEFENSES, create_defense
from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import InvalidParameterError, RobustlabError, UnknownNameError
from robustlab.models import MODELS
from robustlab.registry import Registry
from robustlab.seeding import make_generator
from robustlab.spec import parse_spec
from robustlab.tensors import to_uint8
from robustlab.train.strategy import STRATEGIES, load_builtin_strategies

if TYPE_CHECKING:
    from robustlab.data.base import Dataset
    from robustlab.data.folder import DecodedImage
    from robustlab.study.config import CertifyConfig

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
    errors.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    return typer.Exit(code=2)


def _os_error(err: OSError, command: str) -> RobustlabError:
    """The message for a file-system failure of ``robustlab run`` or ``robustlab report``.

    A full disk (``ENOSPC``) says that nothing computed was lost and that rerunning resumes:
    results are committed to ``results.sqlite`` group by group, trained models are in the
    model cache, and every report and run file is replaced atomically (never left partial).
    """
    where = f" (writing {err.filename})" if err.filename else ""
    if err.errno == errno.ENOSPC:
        kept = (
            "finished cells are saved in results.sqlite and trained models in the model cache"
            if command == "run"
            else "results.sqlite was only read"
        )
        return RobustlabError(
            f"the disk is full{where}: the {command} stopped. Nothing computed was lost: {kept}, "
            "and files that could not be written were left as they were (no partial files). "
            "Fix: free some disk space, then run the same command again; it resumes where it "
            "stopped"
        )
    return RobustlabError(
        f"the {command} stopped: {err.strerror or err}{where}. Nothing computed was lost; fix "
        "the cause (permissions, a missing folder, a file in the way), then run the same "
        "command again to resume"
    )


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
    executor: Annotated[
        str | None,
        typer.Option(
            help="local (this process, the default) or ray (trainings and cells as Ray "
            "tasks; pip install 'robustlab\\[ray]'). Overrides the study's executor: block."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster: local (a private cluster on this machine, the default) or "
            "HOST:PORT of a running one."
        ),
    ] = None,
    cpus: Annotated[
        int | None,
        typer.Option(
            help="CPUs to use: threads of the local executor, or the size of a private Ray cluster."
        ),
    ] = None,
) -> None:
    """Run a study: train (or reuse cached) models, evaluate every cell, write the report.

    Models are trained with their strategies (parents first, each once; see `robustlab list
    strategies`); cells are degradations, attacks (oblivious and adaptive), the minimal-noise
    search and randomised-smoothing certificates the study file names, for every model and
    defence, in this process or on a Ray cluster (--executor ray, docs/ray.md) with the same
    numbers. Rerunning the same study skips
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
            executor_overrides={
                k: v
                for k, v in {"name": executor, "address": address, "cpus": cpus}.items()
                if v is not None
            },
        )
    except KeyboardInterrupt:
        errors.print(
            "[yellow]interrupted[/]: finished cells and trained epochs are saved; "
            "run the same command again to resume."
        )
        raise typer.Exit(code=130) from None
    except RobustlabError as err:
        raise _fail(err) from None
    except OSError as err:
        raise _fail(_os_error(err, "run")) from None
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
    except OSError as err:
        raise _fail(_os_error(err, "report")) from None
    console.print(f"report:  {html}\n         {md}")


def _read_image(path: Path) -> DecodedImage:
    """Decode ``path`` as the folder dataset does (16-bit scaled, float in [0, 1] kept)."""
    from robustlab.data.folder import read_image

    return read_image(path)


def _output_format(output: Path) -> str:
    """The Pillow format that ``-o`` names; refuses a bad output path before any work."""
    if output.is_dir():
        raise RobustlabError(
            f"cannot write {output}: it is a folder; give a file name, e.g. "
            f"-o {output / 'degraded.png'}"
        )
    for folder in output.parents:
        if folder.exists():
            if not folder.is_dir():
                raise RobustlabError(
                    f"cannot write {output}: {folder} is a file, not a folder; choose an -o "
                    f"path in a folder, or move {folder} away"
                )
            break
    suffix = output.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        what = f"the extension '{output.suffix}'" if suffix else "a name without an extension"
        raise RobustlabError(
            f"cannot write {output}: {what} names no image format robustlab can write; end "
            "the -o file name with .png (lossless), .tif, .bmp, .webp or .jpg"
        )
    return fmt


_DEPTHS = {1: "1-bit", 8: "8-bit", 16: "16-bit", 32: "32-bit float"}


def _write_image(x: torch.Tensor, output: Path, fmt: str, source: DecodedImage) -> tuple[str, int]:
    """Write ``x`` (1, C, H, W) atomically, at the source's bit depth where ``fmt`` holds it.

    Grey 16-bit and float sources give 16-bit PNG / TIFF files (float TIFF for a float
    source); anything else is written with 8 bits. Returns what was written and its bits.
    """
    values = x.detach().cpu()[0].clamp(0, 1)
    grey = values.shape[0] == 1
    if grey and source.bits == 32 and fmt == "TIFF":
        image, bits = Image.fromarray(values[0].numpy().astype(np.float32)), 32
    elif grey and source.bits >= 16 and fmt in ("PNG", "TIFF"):
        deep = values[0].mul(65535).round().numpy().astype(np.uint16)
        image, bits = Image.fromarray(deep), 16
    else:
        pixels = to_uint8(values).permute(1, 2, 0).numpy()
        image, bits = Image.fromarray(pixels[:, :, 0] if grey else pixels), 8
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        image.save(tmp, format=fmt)
    return f"{_DEPTHS[bits]} {'grey' if grey else 'RGB'} {fmt}", bits


T = TypeVar("T")

# torch.Generator.manual_seed takes any 64-bit integer, signed or unsigned.
_SEEDS = (-(2**63), 2**64 - 1)


def _check_seed(seed: int) -> int:
    """``seed`` if a generator can take it, else an error naming --seed and the valid range."""
    if not _SEEDS[0] <= seed <= _SEEDS[1]:
        raise InvalidParameterError(
            f"--seed {seed} is out of range: a seed is a 64-bit integer, from {_SEEDS[0]} to "
            f"{_SEEDS[1]}; use a smaller one, e.g. --seed 0"
        )
    return seed


def _build_piece(option: str, spec: str, create: Callable[..., T]) -> T:
    """Build the piece a ``name:key=value`` spec names; errors name the option and spec."""
    try:
        name, params = parse_spec(spec)
        return create(name, **params)
    except UnknownNameError:
        raise
    except RobustlabError as err:
        raise InvalidParameterError(f"{option} {spec}: {err}") from None


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
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda[:N].")] = "cpu",
) -> None:
    """Apply degradations, then an input defence, to one image and write the result.

    The random draws come from a generator on the device: the same seed gives the same image
    on one device, and (for random degradations) a different draw on another.
    """
    from robustlab.device import resolve_device

    try:
        # Everything the command line says is checked before any file is read or written.
        torch_device = resolve_device(device)
        generator = make_generator(_check_seed(seed), torch_device)
        steps = [_build_piece("-d", spec, create_degradation) for spec in degradation or []]
        front = _build_piece("--defense", defense, create_defense) if defense else None
        fmt = _output_format(output)
        source = _read_image(input)
        for warning in source.warnings:
            errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        x = source.pixels.unsqueeze(0).to(torch_device)
        for step in steps:
            x = step(x, generator)
        if front is not None:
            with torch.no_grad():
                x = front.to(torch_device)(x)
        written, bits = _write_image(x, output, fmt, source)
    except RobustlabError as err:
        raise _fail(err) from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _fail(
                RobustlabError(
                    f"the disk is full: cannot write {output} (a file already there is left as "
                    "it was); free some disk space and run the same command again"
                )
            ) from None
        raise _fail(
            RobustlabError(
                f"cannot write {output}: {err.strerror or err}; choose a writable -o path"
            )
        ) from None
    except ValueError as err:
        raise _fail(RobustlabError(f"cannot write {output}: {err}")) from None
    if bits < source.bits and source.bits > 8:
        keep = ".tif" if source.bits == 32 else ".png or .tif"
        errors.print(
            f"note: {escape(str(input))} has {_DEPTHS[source.bits]} pixels; {written} files "
            f"hold fewer bits (use {keep} to keep them)",
            highlight=False,
        )
    console.print(f"wrote {output} ({written})", highlight=False)


def _check_budget(spec: str, attacker: object) -> None:
    """Refuse a budget that attacks nothing (0) or, under L-inf, exceeds the pixel range (> 1)."""
    eps = getattr(attacker, "eps", None)
    if eps is None:
        return
    norm = str(getattr(attacker, "norm", "linf"))
    if float(eps) == 0.0:
        raise InvalidParameterError(
            f"--attack {spec}: eps=0 leaves every image unchanged (robust accuracy would be the "
            "clean accuracy); give a budget > 0, e.g. eps=0.3 on MNIST or eps=0.031 (8/255) "
            "on CIFAR-10 under linf"
        )
    if norm == "linf" and float(eps) > 1.0:
        raise InvalidParameterError(
            f"--attack {spec}: eps={eps:g} is larger than the whole [0, 1] pixel range under "
            f"linf, so any image can become any other; pixel budgets are at most 1: use e.g. "
            f"eps={float(eps) / 255:.4g} if you meant {eps:g}/255"
        )


def _check_model_data(
    path: Path, net: torch.nn.Module, dataset: Dataset, device: torch.device
) -> None:
    """Compare the dataset a saved model was trained on (its card) with ``--data``.

    Refuses when the model cannot take the dataset's images or classes; warns when it can but
    the datasets differ (e.g. an MNIST model on Fashion-MNIST).
    """
    from robustlab.models.store import read_card

    trained_on = read_card(path).dataset
    if not trained_on or trained_on == dataset.name:
        return
    shape = tuple(dataset.image_shape)
    try:
        with torch.no_grad():
            out = net(torch.zeros((1, *shape), device=device))
        fits = out.ndim == 2 and out.shape[1] == dataset.num_classes
    except (RuntimeError, ValueError, RobustlabError):
        fits = False
    if not fits:
        raise InvalidParameterError(
            f"--model {path} was trained on '{trained_on}' (its card says so), but --data "
            f"{dataset.name} has {'x'.join(map(str, shape))} images in {dataset.num_classes} "
            f"classes, which it cannot classify; use --data {trained_on}, or a model trained "
            f"on {dataset.name}"
        )
    errors.print(
        f"[yellow]warning:[/] --model {escape(str(path))} was trained on '{escape(trained_on)}' "
        f"but runs on --data {escape(dataset.name)}: the images and classes fit, the "
        f"accuracies measure a transfer to another dataset",
        highlight=False,
    )


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
        _check_seed(seed)
        attacker = _build_piece("--attack", attack_spec, create_attack)
        _check_budget(attack_spec, attacker)
        front = None
        if defense:
            front = _build_piece("--defense", defense, create_defense)
        net = load_model(model, device=str(torch_device))
        dataset = load_dataset(data, data_dir=str(data_dir) if data_dir else None)
        _check_model_data(model, net, dataset, torch_device)
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
        raise _fail(
            RobustlabError(
                f"cannot write {out}: {err.strerror or err}; give --out a file path in a "
                "writable folder, e.g. --out adv.npz"
            )
        ) from None
    n = len(result)
    clean = int((result.clean_predictions == result.labels).sum())
    robust = int((result.predictions == result.labels).sum())
    protocol = "adaptive" if adaptive else "oblivious"
    console.print(f"attack:   {attack_spec} ({protocol})", highlight=False)
    console.print(f"defence:  {defense or 'none'} ({result.method})")
    console.print(f"clean accuracy:  {result.clean_accuracy:.4f} ({clean} of {n})")
    console.print(f"robust accuracy: {result.robust_accuracy:.4f} ({robust} of {n})")
    if result.notes.get("attacks"):
        fooled = result.notes.get("fooled_by", {})
        ran = ", ".join(f"{name} {fooled.get(name, 0)}" for name in result.notes["attacks"])
        line = f"ensemble: {result.notes.get('version', '')} version; images fooled by {ran}"
        if result.notes.get("random_model"):
            line += f"; random model: EOT over {result.notes.get('eot_samples')} draws"
        console.print(line, highlight=False)
    for flag in result.flags:
        console.print(f"[bold yellow]sanity flag[/] {escape(str(flag))}", highlight=False)
    console.print(f"wrote {out}")


def _certify_settings(
    sigma: list[float], n0: int, n: int, alpha: float, images: int, batch_size: int,
    radius: list[float] | None,
) -> CertifyConfig:  # fmt: skip
    """The command's sampling settings, validated as a study's ``certify:`` section is."""
    from pydantic import ValidationError

    from robustlab.study.config import CertifyConfig

    try:
        return CertifyConfig(
            sigma=sigma, n0=n0, n=n, alpha=alpha, images=images, batch_size=batch_size,
            radii=radius or None,
        )  # fmt: skip
    except ValidationError as err:
        problems = []
        for issue in err.errors():
            field = str(issue["loc"][0]) if issue["loc"] else "radii"  # the one cross-check
            where = "--" + field.replace("_", "-").replace("radii", "radius")
            problems.append(f"{where}: {str(issue['msg']).removeprefix('Value error, ')}")
        raise RobustlabError("; ".join(problems)) from None


@app.command("certify")
def certify_command(
    model: Annotated[
        Path, typer.Option("--model", help="A saved robustlab model (.safetensors + .json card).")
    ],
    data: Annotated[str, typer.Option("--data", help="Dataset name, e.g. mnist.")],
    sigma: Annotated[
        list[float] | None,
        typer.Option(
            "--sigma",
            help="Noise level in [0, 1] pixel units (repeatable; Cohen et al.: 0.12, 0.25, "
            "0.5, 1.0). Default 0.25.",
        ),
    ] = None,
    n0: Annotated[int, typer.Option("--n0", help="Selection draws per image.")] = 100,
    n: Annotated[
        int, typer.Option("--n", help="Estimation draws per image (Cohen et al.: 100000).")
    ] = 10_000,
    alpha: Annotated[float, typer.Option(help="Failure probability of each certificate.")] = 0.001,
    images: Annotated[int, typer.Option(help="Certify the first N images of the split.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Noisy images per forward pass.")] = 1000,
    radius: Annotated[
        list[float] | None,
        typer.Option(
            "--radius",
            help="Report radius (repeatable); default a few up to the largest certifiable one.",
        ),
    ] = None,
    split: Annotated[Split, typer.Option(help="Which split to certify.")] = Split.test,
    defense: Annotated[
        str | None,
        typer.Option(
            "--defense",
            help="Input defence SPEC inside the smoothed classifier, e.g. median:size=3 "
            "(denoised smoothing); default none.",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (CUDA if available), cpu or cuda[:N].")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the noise (a study's seed: same noise).")] = 0,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write one CSV row per sigma and image here."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Certify a saved model by randomised smoothing (Cohen et al. 2019); print certified accuracy.

    For each sigma the model's smoothed classifier (the class it returns most often under
    Gaussian noise) gets, per image, a class and an L2 radius within which that class provably
    does not change, with probability 1 - alpha over the sampling, or abstains. Certified
    accuracy at r: the share of images certified correct with a radius of at least r
    (abstentions count as wrong); r = 0 is the smoothed classifier's clean accuracy. The noise
    at each sigma is seeded as in a study's ``certify:`` section, so the same seed, images and
    settings give the study's numbers. With ``--defense`` the defence runs inside the smoothed
    classifier, on every noisy copy (Salman et al.'s denoised smoothing for a denoiser).
    """
    from robustlab.certify import certify as certify_images
    from robustlab.certify.radii import radius_grid
    from robustlab.data import load_dataset
    from robustlab.defend import defended
    from robustlab.device import resolve_device
    from robustlab.models import load_model
    from robustlab.seeding import derive_seed
    from robustlab.study.certify_runner import CSV_COLUMNS, KIND, certified_hits
    from robustlab.study.progress import RichProgress, SilentProgress

    try:
        settings = _certify_settings(sigma or [0.25], n0, n, alpha, images, batch_size, radius)
        torch_device = resolve_device(device)
        _check_seed(seed)
        front = None
        if defense:
            front = _build_piece("--defense", defense, create_defense)
        net = load_model(model, device=str(torch_device))
        dataset = load_dataset(data, data_dir=str(data_dir) if data_dir else None)
        _check_model_data(model, net, dataset, torch_device)
        if front is not None:
            net = defended(net, front.to(torch_device)).eval()
        chosen = (dataset.test if split is Split.test else dataset.train).subset(settings.images)
        x, y = next(chosen.batches(len(chosen), torch_device))
        labels = y.cpu().numpy().astype(np.int64)
        largest = {s: settings.largest_radius(s) for s in settings.sigma}
        radii = settings.radii or radius_grid(max(largest.values()), points=5)
        certificates = {}
        reporter = SilentProgress() if quiet else RichProgress(errors)
        with reporter:
            task = reporter.start(
                "certify (noisy samples)", len(settings.sigma) * len(x) * (n0 + n)
            )
            for s in settings.sigma:
                seen = [0]

                def advance(done: int, seen: list[int] = seen) -> None:
                    reporter.advance(task, done - seen[0])
                    seen[0] = done

                certificates[s] = certify_images(
                    net, x, sigma=s, n0=settings.n0, n=settings.n, alpha=settings.alpha,
                    batch_size=settings.batch_size,
                    generator=make_generator(derive_seed(seed, KIND, s), torch_device),
                    num_classes=dataset.num_classes, progress=advance,
                )  # fmt: skip
            reporter.finish(task)
        name = model.name.removesuffix(".safetensors")
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            with output.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_COLUMNS)
                writer.writerows(
                    [name, defense or "none", f"{s:g}", i, int(labels[i]), int(c.prediction[i]),
                     f"{c.radius[i]:.6f}", f"{c.p_lower[i]:.10g}", int(c.counts[i])]
                    for s, c in certificates.items()
                    for i in range(len(labels))
                )  # fmt: skip
    except RobustlabError as err:
        raise _fail(err) from None
    except OSError as err:
        raise _fail(RobustlabError(f"cannot write {output}: {err}")) from None
    positive = [r for r in radii if r > 0]
    table = Table(
        title=f"certified accuracy (%) of {name}'s smoothed classifier on {len(x)} "
        f"{split.value} images (n0={settings.n0}, n={settings.n}, alpha={settings.alpha:g})",
        title_justify="left",
    )
    for column in ["sigma", "clean (r=0)", "abstained", *(f"r={r:g}" for r in positive)]:
        table.add_column(column, justify="right")
    table.add_column("largest certifiable r", justify="right")
    for s, c in certificates.items():
        hits = certified_hits(c, labels, [0.0, *positive])
        share = [f"{100 * h / max(len(labels), 1):.1f}" for h in hits.tolist()]
        abstained = f"{100 * float((c.prediction < 0).mean()) if len(c) else 0.0:.1f}"
        table.add_row(f"{s:g}", share[0], abstained, *share[1:], f"{largest[s]:.3f}")
    console.print(table)
    console.print(
        "abstentions count as wrong; the guarantee holds for the smoothed classifier with "
        f"probability {1 - settings.alpha:g} over the sampling"
    )
    if output is not None:
        console.print(f"wrote {output}")


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
