"""One call for a model in a notebook: :func:`evaluate` runs a study without a YAML file.

``evaluate(model, data=..., degradations=..., attacks=..., defenses=...)`` builds an ordinary
study configuration and runs it with :func:`robustlab.run_study`: one engine, not a second one.
What the study needs on disk goes into the run directory's ``inputs/`` folder:

* the model, traced to TorchScript (``inputs/model.pt``), checked to give the same logits as
  the module on a batch of the data; it is rewritten only when its content changes, so a second
  call with the same model reuses every finished cell, and an interrupted call resumes;
* an ``(images, labels)`` pair or a DataLoader, as a ``tensors`` dataset
  (``inputs/data.safetensors``, :mod:`robustlab.data.tensors`), pixels kept exactly as given.

The model is evaluated as given: it takes ``[0, 1]`` pixels unless ``normalize=(mean, std)``
says which normalisation it expects (robustlab then feeds it ``(x - mean) / std``).
``result.config`` is the YAML that reruns the same study from the command line
(``robustlab run study.yaml``), ``result.table`` the tidy rows of ``results.csv`` (a pandas
DataFrame where pandas is installed) and ``result.report()`` the HTML report, shown inline in
Jupyter.

Example:
    >>> import tempfile, torch, robustlab
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    >>> images, labels = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
    >>> result = robustlab.evaluate(net, data=(images, labels),
    ...     degradations=["gaussian_noise:sigma=0.1"], attacks=["fgsm:eps=8/255"],
    ...     run_dir=tempfile.mkdtemp())
    >>> sorted({row["kind"] for row in result.rows()})
    ['attack', 'degradation']
    >>> robustlab.evaluate(net, data=(images * 255, labels), run_dir=tempfile.mkdtemp())
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robustlab.errors.InvalidParameterError: images has values in [..., ...]; ... divide by 255 ...
"""

from __future__ import annotations

import csv
import hashlib
import html
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from robustlab.data.datasets import load_dataset
from robustlab.data.tensors import checked_images, checked_labels, save_tensor_dataset
from robustlab.degrade.suites import SUITES
from robustlab.errors import ConfigError, InvalidParameterError, ModelError
from robustlab.study.config import StudyConfig, check_study_name, parse_config
from robustlab.study.run_dir import check_run_dir
from robustlab.study.runner import RunResult, run_study

#: The run directory's folder for what :func:`evaluate` writes (model, data).
INPUTS = "inputs"
_PROBE = 8  # images the traced model is checked on

Pieces = str | Sequence[str | dict[str, Any]] | None


@dataclass(frozen=True)
class ReportView:
    """The HTML report of a run; shown inline in Jupyter, its ``path`` anywhere else."""

    path: Path

    def _repr_html_(self) -> str:
        page = html.escape(self.path.read_text(encoding="utf-8"), quote=True)
        return f'<iframe srcdoc="{page}" style="width:100%;height:800px;border:0"></iframe>'

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate` leaves: the run, the study it ran and how to rerun it."""

    run: RunResult
    study: StudyConfig
    config: str  # YAML that reruns the study from the command line

    @property
    def run_dir(self) -> Path:
        """The run directory (results, report, inputs)."""
        return self.run.run_dir

    def rows(self) -> list[dict[str, Any]]:
        """The rows of ``results.csv``, numbers as numbers, empty cells as None."""
        with self.run.results_csv.open(newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    @property
    def table(self) -> Any:
        """``results.csv`` as a pandas DataFrame, or as :meth:`rows` without pandas."""
        try:
            import pandas as pd
        except ImportError:
            return self.rows()
        return pd.read_csv(self.run.results_csv)

    def report(self) -> ReportView:
        """The HTML report (displayed inline when it is a notebook cell's value)."""
        return ReportView(self.run.report_html)


def _number(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def evaluate(
    model: nn.Module,
    data: str | tuple[torch.Tensor, torch.Tensor] | Iterable[Any] = "mnist-sample",
    degradations: Pieces = None,
    attacks: Pieces = None,
    defenses: Pieces = ("none",),
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    classes: Sequence[str] | int | None = None,
    images: int | None = None,
    name: str = "evaluate",
    run_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate a trained ``nn.Module`` under degradations, attacks and defences.

    Args:
        model: the classifier, as it is (logits out); never trained or changed.
        data: a dataset name (``mnist``, ``cifar10``, ``folder:PATH``...), an
            ``(images, labels)`` pair of tensors (``uint8`` or float in ``[0, 1]``), or a
            DataLoader (any iterable of ``(images, labels)`` batches).
        degradations: a suite name (``cifar-c``), or a list of degradation specs
            (``"gaussian_noise:sigma=0.1"``) or mappings as in a study file.
        attacks: attack specs (``"pgd:eps=8/255"``) or mappings; oblivious and adaptive.
        defenses: input defences (``"none"`` is the bare model), e.g. ``["none", "median"]``.
        normalize: ``(mean, std)`` the model expects its input normalised with; None: it
            takes ``[0, 1]`` pixels.
        classes: class names (or their number) of tensor data; default: the model's outputs.
        images: evaluate on the first N test images only.
        name: the study's name (and, by default, its run directory ``runs/<name>``).
        run_dir: where results, report and inputs go.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        data_dir: where named datasets are read (else ``$ROBUSTLAB_DATA``).
        batch_size: evaluation batch size.
        seed: the study's seed (every random draw derives from it).
        progress: show progress bars.

    Returns:
        The run, the study, the YAML that reruns it, the table and the report.

    Raises:
        RobustlabError: for a bad argument (named, with the fix) before any work starts.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model must be a torch.nn.Module (a classifier returning logits), got "
            f"{type(model).__name__}; for a saved model use robustlab.load_model(path) first"
        )
    try:
        check_study_name(name)
    except ValueError as err:
        raise ConfigError(f"robustlab.evaluate: {err}") from None
    target = Path(run_dir) if run_dir is not None else Path("runs") / name
    source = _data_source(data, classes, model, data_dir)
    _check_normalize(normalize, source.example.shape[1])
    pieces = {
        "degradations": _pieces(degradations, "degradations", suites=True),
        "attacks": _pieces(attacks, "attacks"),
        "defenses": _pieces(defenses, "defenses") or ["none"],
    }
    check_run_dir(target, name)  # everything is checked before anything is written
    inputs = target.resolve() / INPUTS
    dataset_name = source.write(inputs / "data.safetensors")
    model_path = _traced(model, source.example, normalize, inputs / "model.pt")
    study: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "dataset": {"name": dataset_name, **({"test_limit": images} if images is not None else {})},
        "models": [{"name": "model", "torchscript": str(model_path)}],
        **pieces,
        "batch_size": batch_size,
        "output": str(target.resolve()),
    }
    if normalize is not None:
        study["models"][0]["normalize"] = {"mean": list(normalize[0]), "std": list(normalize[1])}
    config = parse_config(study, "robustlab.evaluate")
    run = run_study(config, data_dir=data_dir, device=device, progress=progress)
    text = yaml.safe_dump(study, sort_keys=False, allow_unicode=True)
    return EvaluationResult(run, config, text)


def _check_normalize(
    normalize: tuple[Sequence[float], Sequence[float]] | None, channels: int
) -> None:
    """Refuse a normalisation that does not fit the images, before the model is run on it."""
    if normalize is None:
        return
    if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
        raise InvalidParameterError(
            "normalize is (mean, std), one value per channel or one for all, e.g. "
            "normalize=([0.1307], [0.3081])"
        )
    mean, std = (list(map(float, values)) for values in normalize)
    for values, what in ((mean, "mean"), (std, "std")):
        if len(values) not in (1, channels):
            raise InvalidParameterError(
                f"normalize gives {len(values)} {what} values but the images have {channels} "
                f"channel(s); give one per channel, or one for all"
            )
    if not all(0.0 < s < float("inf") for s in std):
        raise InvalidParameterError(f"normalize: every std must be a finite number > 0, got {std}")


def _pieces(value: Pieces, what: str, suites: bool = False) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence):
        raise InvalidParameterError(
            f"{what} must be a name, a spec string or a list of them, got {type(value).__name__}"
        )
    out: list[Any] = []
    for item in value:
        if suites and isinstance(item, str) and item in SUITES:
            out.append({"suite": item})
        elif isinstance(item, (str, dict)):
            out.append(item)
        else:
            raise InvalidParameterError(
                f"{what}: {item!r} is a {type(item).__name__}; give a spec string such as "
                f"{'gaussian_noise:sigma=0.1' if suites else 'pgd:eps=8/255'} or a mapping"
            )
    return out


@dataclass(frozen=True)
class _DataSource:
    """The study's data: a dataset name, or checked tensors still to be written."""

    name: str | None
    example: torch.Tensor  # a batch of float test images in [0, 1], to trace the model on
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    classes: Sequence[str] | int | None = None

    def write(self, path: Path) -> str:
        """The dataset name for the study, writing the tensors to ``path`` if there are any."""
        if self.name is not None:
            return self.name
        assert self.images is not None and self.labels is not None
        saved = save_tensor_dataset(path, self.images, self.labels, classes=self.classes)
        return f"tensors:{saved}"


def _data_source(
    data: Any,
    classes: Sequence[str] | int | None,
    model: nn.Module,
    data_dir: str | os.PathLike[str] | None,
) -> _DataSource:
    if isinstance(data, str):
        dataset = load_dataset(data, data_dir=str(data_dir) if data_dir else None)
        x, _ = next(dataset.test.batches(_PROBE))
        return _DataSource(data, x)
    if isinstance(data, torch.Tensor):
        raise InvalidParameterError(
            "data is a single tensor; give (images, labels), a DataLoader or a dataset name"
        )
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    elif isinstance(data, Iterable):
        images, labels = _concatenated(data)
    else:
        raise InvalidParameterError(
            f"data must be a dataset name, an (images, labels) pair or a DataLoader, got "
            f"{type(data).__name__}"
        )
    x = checked_images(images, "images")
    y = checked_labels(labels, len(x), "labels")
    probe = x[:_PROBE].float() / 255.0 if x.dtype == torch.uint8 else x[:_PROBE]
    if classes is None:
        classes = int(_eager(model, probe).shape[1])
    return _DataSource(None, probe, x, y, classes)


def _concatenated(batches: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InvalidParameterError(
                f"batch {i} of the DataLoader is a {type(batch).__name__}; it must yield "
                "(images, labels) pairs"
            )
        xs.append(checked_images(batch[0], f"images of batch {i}"))
        ys.append(checked_labels(batch[1], len(xs[-1]), f"labels of batch {i}"))
    if not xs:
        raise InvalidParameterError("the DataLoader yielded no batch; give at least one image")
    if len({x.dtype for x in xs}) > 1:
        raise InvalidParameterError("the DataLoader's batches mix uint8 and float images")
    return torch.cat(xs), torch.cat(ys)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    training = model.training
    model.eval()
    try:
        out = model(x.to(_device_of(model)))
    except Exception as err:
        raise ModelError(
            f"the model failed on a batch of shape {tuple(x.shape)} "
            f"({type(err).__name__}: {err}); give data of the shape it was built for"
        ) from err
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"the model returned {shape} for {len(x)} images; robustlab needs logits "
            f"({len(x)}, classes)"
        )
    if not bool(torch.isfinite(out).all()):
        raise ModelError(
            "the model returned NaN or infinite logits on the first images of the data; check "
            "its weights and the normalize it is given (robustlab feeds it (x - mean) / std)"
        )
    return out.detach().cpu()


def _traced(
    model: nn.Module,
    example: torch.Tensor,
    normalize: tuple[Sequence[float], Sequence[float]] | None,
    path: Path,
) -> Path:
    """Trace ``model`` to TorchScript at ``path`` (kept if unchanged), checked on ``example``."""
    x = example
    if normalize is not None:
        mean = torch.tensor(normalize[0], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(normalize[1], dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
    with torch.no_grad():
        expected = _eager(model, x)
    training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notes
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                model, x.to(_device_of(model)), check_trace=False
            )
            got = traced(x.to(_device_of(model))).detach().cpu()
            if not torch.equal(got, expected):
                raise ModelError(
                    "the model cannot be traced faithfully: TorchScript's trace gives other "
                    f"logits than the module (largest difference {(got - expected).abs().max()}"
                    "), e.g. because it branches on its input; save it yourself with "
                    "torch.jit.script(model).save(path) and evaluate robustlab.load_model's "
                    "result, or give a study file with factory + weights"
                )
            fingerprint = _fingerprint(traced)
            stamp = path.with_name(path.name + ".sha256")
            if path.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
                return path  # unchanged: the cells computed with it stay valid
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.jit.save(traced, str(tmp))  # type: ignore[no-untyped-call]
            os.replace(tmp, path)
            stamp.write_text(fingerprint)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(
            f"the model cannot be traced to TorchScript ({type(err).__name__}: {err}); "
            "evaluate needs a model it can save into the run directory; write a study file "
            "with factory + weights instead (README, Models)"
        ) from err
    finally:
        model.train(training)
    return path


def _fingerprint(traced: Any) -> str:
    """SHA-256 of a traced model's code and tensors.

    The saved file is not byte-stable: each trace gets fresh ``___torch_mangle_N`` class names.
    """
    digest = hashlib.sha256()
    for module in traced.modules():
        digest.update(re.sub(r"___torch_mangle_\d+", "", module.code).encode())
    for key, tensor in traced.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
