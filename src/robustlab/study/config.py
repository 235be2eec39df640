"""The study file: YAML validated into a typed configuration.

A study names a dataset, the models to train (or load), the degradations with their parameter
grids, the input defences, the number of trials and where the run directory goes. Every name
is checked against its registry while validating, so a typo fails before any work starts, and a
malformed YAML file is reported with its line and column.

Example:
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo",
    ...     "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [2]}],
    ...     "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1, 0.3]}}],
    ...     "defenses": ["none", "median:size=3"],
    ... })
    >>> [d.label for d in cfg.defenses]
    ['none', 'median']
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustlab.data.datasets import DATASETS
from robustlab.defend import DEFENSES
from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import ConfigError, RobustlabError
from robustlab.models import MODELS
from robustlab.spec import parse_spec


@contextmanager
def _as_value_error() -> Iterator[None]:
    # pydantic attaches a field location only to ValueErrors raised inside validators.
    try:
        yield
    except RobustlabError as err:
        raise ValueError(str(err)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """Which dataset, and optionally how many test images to evaluate on."""

    name: str
    test_limit: int | None = Field(None, ge=1, description="evaluate on the first N test images")
    train_limit: int | None = Field(None, ge=1, description="train on the first N train images")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        with _as_value_error():
            DATASETS.entry(name)
        return name


class ModelConfig(_Strict):
    """A model to train (architecture + training recipe), one per entry of ``epochs``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    epochs: list[int] = Field(default_factory=lambda: [10], min_length=1)
    batch_size: int = Field(100, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0

    @field_validator("architecture")
    @classmethod
    def _known(cls, name: str) -> str:
        with _as_value_error():
            MODELS.entry(name)
        return name

    @field_validator("epochs")
    @classmethod
    def _positive(cls, epochs: list[int]) -> list[int]:
        if any(e < 1 for e in epochs):
            raise ValueError("every entry of epochs must be >= 1")
        return sorted(set(epochs))


class PieceConfig(_Strict):
    """A registered piece with fixed parameters: ``{name, params, label}`` or a spec string."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_spec(cls, value: Any) -> Any:
        if isinstance(value, str):
            name, params = parse_spec(value)
            return {"name": name, "params": params}
        return value

    @model_validator(mode="after")
    def _default_label(self) -> PieceConfig:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        return self


class DefenseConfig(PieceConfig):
    """An input defence in front of every model (``none`` for the bare model)."""

    @model_validator(mode="after")
    def _known(self) -> DefenseConfig:
        with _as_value_error():
            DEFENSES.check_parameters(self.name, self.params)
        return self


class DegradationConfig(PieceConfig):
    """A degradation, its fixed parameters and the grid of swept values."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> DegradationConfig:
        with _as_value_error():
            DEGRADATIONS.check_parameters(self.name, {**self.params, **dict.fromkeys(self.grid, 0)})
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid of '{self.name}' gives no values for '{key}'")
        with _as_value_error():
            for params in self.settings():  # out-of-range values fail here, before any work
                create_degradation(self.name, **params)
        return self

    @property
    def swept(self) -> str | None:
        """The parameter reported as ``severity``: the registered one if swept, else the first."""
        severity = DEGRADATIONS.entry(self.name).severity
        if severity in self.grid:
            return severity
        return next(iter(self.grid), None)

    def settings(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid, merged over the fixed parameters."""
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        return [{**self.params, **dict(zip(keys, combo, strict=True))} for combo in combos]


class ReferenceTable(_Strict):
    """Published numbers to put beside ours: one table of a paper."""

    title: str
    model: str = Field(description="model id in this study, e.g. cnn-e10")
    degradation: str
    metric: Literal["errors", "accuracy"] = "errors"
    n: int | None = Field(None, description="test set size the paper counted errors on")
    columns: list[float | None] = Field(description="severities; null for the clean column")
    rows: dict[str, list[float | None]] = Field(description="defence label -> values per column")


class PerClassReference(_Strict):
    """Published per-class numbers (aghdam2016 Tables 1-3), pooled over a degradation's grid."""

    title: str
    model: str = Field(description="model id in this study, e.g. cnn-e10")
    metric: Literal["precision", "recall"]
    columns: list[str] = Field(description="'clean' or a degradation label (pooled)")
    rows: dict[str, list[float | None]] = Field(description="class name -> values per column")
    accuracy: list[float | None] | None = Field(
        None, description="top-1 accuracy per column, as a fraction"
    )


class Reference(_Strict):
    """The paper a study replicates and its tables."""

    citation: str
    notes: list[str] = Field(default_factory=list)
    tables: list[ReferenceTable] = Field(default_factory=list)
    per_class: list[PerClassReference] = Field(default_factory=list)


class StudyConfig(_Strict):
    """A whole study: the root of the YAML file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    dataset: DatasetConfig
    models: list[ModelConfig] = Field(min_length=1)
    degradations: list[DegradationConfig] = Field(default_factory=list)
    defenses: list[DefenseConfig] = Field(default_factory=lambda: [DefenseConfig(name="none")])
    trials: int = Field(1, ge=1, description="independent draws of every random degradation")
    copies: int = Field(
        1, ge=1, description="Monte-Carlo degraded copies of every test image per trial"
    )
    include_clean: bool = True
    batch_size: int = Field(1000, ge=1, description="evaluation batch size")
    quality_metrics: bool = Field(True, description="PSNR and SSIM of every degraded input")
    records: int = Field(
        0, ge=0, description="keep per-sample records (PSNR, score, prediction) of N copies"
    )
    examples: int = Field(8, ge=0, le=64, description="example images stored per setting")
    baseline_model: str | None = Field(
        None, description="model id (e.g. cnn-e10) that mCE and relative mCE are relative to"
    )
    output: str | None = Field(None, description="run directory; default runs/<name>")
    reference: Reference | None = None

    @field_validator("degradations", mode="before")
    @classmethod
    def _expand_suites(cls, entries: Any) -> Any:
        """Replace ``{suite: NAME}`` entries by the suite's degradations and severity grids."""
        if not isinstance(entries, list):
            return entries
        expanded: list[Any] = []
        for entry in entries:
            if isinstance(entry, dict) and "suite" in entry:
                from robustlab.degrade.suites import expand_suite

                extra = set(entry) - {"suite"}
                if extra:
                    raise ValueError(f"a suite entry takes only 'suite', not {sorted(extra)}")
                with _as_value_error():
                    expanded += [item.config() for item in expand_suite(str(entry["suite"]))]
            else:
                expanded.append(entry)
        return expanded

    @model_validator(mode="after")
    def _unique_labels(self) -> StudyConfig:
        for kind, labels in (
            ("model", [m.name for m in self.models]),
            ("defence", [d.label for d in self.defenses]),
            ("degradation", [d.label for d in self.degradations]),
        ):
            dupes = {x for x in labels if labels.count(x) > 1}
            if dupes:
                raise ValueError(f"{kind} labels must be unique; repeated: {sorted(dupes)}")
        if self.baseline_model is not None:
            ids = [f"{m.name}-e{e}" for m in self.models for e in m.epochs]
            if self.baseline_model not in ids:
                raise ValueError(
                    f"baseline_model '{self.baseline_model}' is not a model of this study; "
                    f"valid: {', '.join(ids)}"
                )
        return self

    def run_dir(self, base: str | os.PathLike[str] | None = None) -> Path:
        """The run directory: ``base`` if given, else ``output``, else ``runs/<name>``."""
        return Path(base or self.output or Path("runs") / self.name)


def _yaml_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    return ConfigError(f"{path}: malformed YAML{where}: {problem}")


def _validation_error(source: str, err: ValidationError) -> ConfigError:
    lines = []
    for issue in err.errors():
        location = ".".join(str(p) for p in issue["loc"]) or "(top level)"
        lines.append(f"  {location}: {issue['msg']}")
    return ConfigError(f"{source}: invalid study configuration:\n" + "\n".join(lines))


def parse_config(data: Any, source: str = "<config>") -> StudyConfig:
    """Validate already-parsed YAML ``data`` into a :class:`StudyConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study file must be a YAML mapping (key: value lines)")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise _validation_error(source, err) from None
    except RobustlabError as err:
        raise ConfigError(f"{source}: {err}") from None


def _apply_bases(documents: list[Any], source: Path) -> list[Any]:
    by_name: dict[str, dict[str, Any]] = {}
    merged = []
    for document in documents:
        if isinstance(document, dict) and "base" in document:
            base = document["base"]
            if base not in by_name:
                raise ConfigError(
                    f"{source}: study '{document.get('name')}' has base '{base}', which is not an "
                    f"earlier study of this file; earlier: {', '.join(by_name) or '(none)'}"
                )
            document = {**by_name[base], **{k: v for k, v in document.items() if k != "base"}}
        if isinstance(document, dict) and isinstance(document.get("name"), str):
            by_name[document["name"]] = document
        merged.append(document)
    return merged


def load_configs(path: str | os.PathLike[str]) -> list[StudyConfig]:
    """Read and validate every study of the file at ``path``.

    A file may hold several studies as YAML documents separated by ``---`` (e.g. the same
    experiment on MNIST and on Fashion-MNIST); each runs into its own run directory. A later
    document may start from an earlier one with ``base: <earlier name>``: it takes the earlier
    document's top-level keys and replaces those it sets itself.

    Raises:
        ConfigError: naming the file and, for malformed YAML, the line and column.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"study file {source} not found")
    try:
        documents = [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise _yaml_error(source, err) from None
    if not documents:
        raise ConfigError(f"{source}: the file holds no study")
    documents = _apply_bases(documents, source)
    configs = [
        parse_config(d, f"{source} (study {i + 1})" if len(documents) > 1 else str(source))
        for i, d in enumerate(documents)
    ]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: the studies of one file need distinct names, got {names}")
    return configs


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate the study file at ``path``, which must hold exactly one study.

    Raises:
        ConfigError: naming the file and, for malformed YAML, the line and column.
    """
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError(
            f"{path} holds {len(configs)} studies; use load_configs() or run_studies()"
        )
    return configs[0]
