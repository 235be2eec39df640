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

import copy
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from robustlab.data.registry import check_dataset, resolve_dataset_name
from robustlab.defend import DEFENSES
from robustlab.defend.denoiser import check_denoiser_params
from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import ConfigError, RobustlabError
from robustlab.models import MODELS
from robustlab.models.external import parse_factory_reference
from robustlab.spec import parse_spec
from robustlab.study.executor_config import ExecutorConfig
from robustlab.study_yaml import (
    DuplicateKeyError,
    Location,
    dotted,
    fraction_value,
    line_of,
    load_documents,
    non_finite,
    why_unusable,
)


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
    """Which dataset (a registered name or ``folder:PATH``), its parameters, and limits."""

    name: str
    test_limit: int | None = Field(None, ge=1, description="evaluate on the first N test images")
    train_limit: int | None = Field(None, ge=1, description="train on the first N train images")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the dataset's own parameters, e.g. image_size"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        with _as_value_error():
            resolve_dataset_name(name)
        return name

    @model_validator(mode="after")
    def _known_params(self) -> DatasetConfig:
        with _as_value_error():
            check_dataset(self.name, self.params)
        return self

    @model_serializer(mode="wrap")
    def _omit_empty_params(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Without dataset parameters the dump, and so every cell key, is what it was before
        # ``params`` existed: stored results of older studies stay valid.
        data: dict[str, Any] = handler(self)
        if not self.params:
            data.pop("params", None)
        return data


class NormalizeConfig(_Strict):
    """The input normalisation a user's model was trained with: ``(x - mean) / std``."""

    mean: list[float] = Field(min_length=1, description="one value per channel, or one for all")
    std: list[float] = Field(min_length=1, description="one value per channel, or one for all")

    @model_validator(mode="after")
    def _consistent(self) -> NormalizeConfig:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"normalize needs as many std as mean values, got {len(self.mean)} means and "
                f"{len(self.std)} stds"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError("every std of normalize must be > 0")
        return self


_SOURCES = (
    "architecture", "factory", "torchscript", "ensemble", "master_slave", "adaptive_filter",
    "denoised",
)  # fmt: skip
#: The composite sources: models built from other models of the study without training.
_COMPOSITES = ("ensemble", "master_slave", "adaptive_filter", "denoised")
_TRAINING_FIELDS = (
    "epochs", "batch_size", "learning_rate", "optimizer", "seed", "seeds", "betas",
    "weight_decay", "strategy", "parent",
)  # fmt: skip


class StrategyConfig(_Strict):
    """A training strategy and its parameters: ``{name, params}`` or a spec string.

    Example:
        >>> StrategyConfig.model_validate("stability:alpha=0.01,sigma=0.04").params
        {'alpha': 0.01, 'sigma': 0.04}
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_spec(cls, value: Any) -> Any:
        if isinstance(value, str):
            with _as_value_error():
                name, params = parse_spec(value)
            return {"name": name, "params": params}
        return value

    @model_validator(mode="after")
    def _known(self) -> StrategyConfig:
        from robustlab.train.strategy import create_strategy

        with _as_value_error():
            create_strategy(self.name, **self.params)  # names, parameters and values
        return self

    @property
    def parent_role(self) -> str | None:
        """The role of the parent model this strategy starts from, or None."""
        from robustlab.train.strategy import create_strategy

        return create_strategy(self.name, **self.params).parent_role

    @property
    def parent_use(self) -> str:
        """``start`` (the network is the parent's) or ``frozen`` (built fresh, parent kept)."""
        from robustlab.train.strategy import strategy_entry

        return str(getattr(strategy_entry(self.name).factory, "parent_use", "start"))


class EnsembleConfig(_Strict):
    """An ensemble of study models answering as one (:class:`robustlab.models.ensemble.Ensemble`).

    Example:
        >>> EnsembleConfig(members=["cnn"], combine="vote").combine
        'vote'
    """

    members: list[str] = Field(
        min_length=1,
        description="model ids of the study, or entry names (an entry stands for all its ids)",
    )
    combine: Literal["probability", "logit", "vote"] = Field(
        "probability", description="mean probability, mean logit or majority vote"
    )


class MasterSlaveConfig(_Strict):
    """ghosh2018's master-slave router (:class:`robustlab.models.master_slave.MasterSlave`).

    ``branches`` answer one bin each, in the master's bin order; with a ``master`` (a model
    trained by the ``quality`` strategy) the branch of its most probable bin answers (MS, the
    paper's Eq. 2); without one every branch answers and the most confident wins (AMS, Eq. 3).

    Example:
        >>> MasterSlaveConfig(branches=["base-e10", "jpeg-e3"]).master is None
        True
    """

    branches: list[str] = Field(
        min_length=1,
        description="model ids, one per bin in the master's bin order; a model trained by "
        "joint_branches stands for all of its branches",
    )
    master: str | None = Field(
        None, description="id of a quality network choosing the branch (MS); none: AMS"
    )


class AdaptiveFilterConfig(_Strict):
    """Adaptive filter selection (:class:`robustlab.models.adaptive_filter.AdaptiveFilter`).

    A ``detector`` (a quality network whose bins are kinds of degradation) recognises each
    input's kind and the filter mapped to that kind cleans it before ``model`` classifies it.
    ``filters`` maps every bin to a defence; without it the mapping is learned: per bin, the
    candidate with the highest accuracy of ``model`` on ``holdout`` training images put into
    that bin (never the test set).

    Example:
        >>> AdaptiveFilterConfig(detector="kind-e5", model="cnn-e10").candidates[1].name
        'median'
    """

    detector: str = Field(description="id of a quality network whose bins are kinds")
    model: str = Field(description="id of the classifier behind the filters")
    filters: dict[str, DefenseConfig] | None = Field(
        None, description="bin name -> defence; learned from the candidates when omitted"
    )
    candidates: list[DefenseConfig] = Field(
        default_factory=lambda: [
            DefenseConfig(name="none"),
            DefenseConfig(name="median"),
            DefenseConfig(name="gaussian"),
        ],
        min_length=1,
        description="defences the learned mapping chooses from (ties: the first listed)",
    )
    holdout: int = Field(
        1000, ge=10, description="training images (the last ones) the mapping is learned on"
    )


class DenoisedConfig(_Strict):
    """A classifier behind a trained denoiser (:class:`robustlab.models.denoised.Denoised`).

    ``denoiser`` is a model trained by ``denoise`` or ``advfilter``; ``model`` any classifier of
    the study: the one the denoiser was trained for (huang2021's setting), or another one (an
    adversarially trained model behind it, huang2021 Sec. 5). Attacks on it are white-box
    through both (adaptive), or made on ``model`` alone (oblivious: huang2021's protocol when
    ``model`` is the denoiser's own classifier).

    Example:
        >>> DenoisedConfig(denoiser="filt-e10", model="cnn-e3").head is None
        True
    """

    denoiser: str = Field(description="id of a denoiser (strategy denoise or advfilter)")
    model: str = Field(description="id of the classifier behind it")
    head: int | None = Field(
        None, ge=0, description="the head of a multi-head denoiser (0-based); none: its default"
    )
    output: Literal["fused", "sl", "m"] = Field(
        "fused", description="an AdvFilter's fused output, or one decoder's (sl, m: Table 4)"
    )


class ModelConfig(_Strict):
    """A model of the study: one that robustlab trains, or a pretrained one it evaluates.

    Exactly one source: ``architecture`` (a registered network, trained, one model per entry of
    ``epochs``); ``factory`` (``package.module:name`` or ``path/to/file.py:name``, a callable
    returning an ``nn.Module`` built with ``factory_params``), evaluated as is when ``weights``
    are given and trained like an architecture otherwise; ``torchscript`` (a TorchScript file,
    evaluated as is). ``normalize`` declares the input normalisation of a factory or TorchScript
    model (wrapped in front of it, so it takes ``[0, 1]`` pixels). Pretrained models take no
    training settings. Relative paths are relative to the current directory. ``ensemble``
    combines other models of the study (trained once each, shared by every ensemble naming
    them); ``seeds`` trains one copy of the entry per seed (ids ``<name>-e<epochs>-s<seed>``),
    the K copies of aghdam2016's ensembles.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    architecture: str | None = Field(None, description="a registered architecture to train")
    params: dict[str, Any] = Field(default_factory=dict)
    factory: str | None = Field(None, description="module:name or file.py:name of a factory")
    factory_params: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(None, description="state dict for factory (safetensors, .pt)")
    torchscript: str | None = Field(None, description="a TorchScript file to evaluate")
    ensemble: EnsembleConfig | None = Field(
        None, description="combine other models of the study: {members: [...], combine: ...}"
    )
    master_slave: MasterSlaveConfig | None = Field(
        None, description="ghosh2018's router: {branches: [...], master: <quality network>}"
    )
    adaptive_filter: AdaptiveFilterConfig | None = Field(
        None, description="a detected kind of degradation picks the filter: {detector, model}"
    )
    denoised: DenoisedConfig | None = Field(
        None, description="a classifier behind a trained denoiser: {denoiser, model}"
    )
    normalize: NormalizeConfig | None = None
    epochs: list[int] = Field(default_factory=lambda: [10], min_length=1)
    batch_size: int = Field(100, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    betas: tuple[float, float] | None = Field(
        None, description="Adam's (beta1, beta2), e.g. [0.5, 0.999] as cavey"
    )
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    seeds: list[int] = Field(
        default_factory=list,
        description="train one copy per seed (ids <name>-e<epochs>-s<seed>), e.g. for ensembles",
    )
    strategy: StrategyConfig | None = Field(
        None, description="training strategy (standard when omitted), e.g. 'constant' or a mapping"
    )
    parent: str | None = Field(
        None, description="id of the study model this one starts from (e.g. cnn-e10)"
    )
    sweep: dict[str, Any] = Field(
        default_factory=dict,
        description="set by a model grid: the grid point this entry is (report axes)",
    )

    @field_validator("architecture")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is not None:
            with _as_value_error():
                MODELS.entry(name)
        return name

    @field_validator("factory")
    @classmethod
    def _reference(cls, reference: str | None) -> str | None:
        if reference is not None:
            with _as_value_error():
                parse_factory_reference(reference)
        return reference

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        given = [k for k in _SOURCES if getattr(self, k) is not None]
        role = self.strategy.parent_role if self.strategy is not None else None
        if self.parent is not None and role is None:
            raise ValueError(
                f"model '{self.name}' names parent '{self.parent}', but strategy "
                f"'{self.strategy.name if self.strategy else 'standard'}' trains from scratch; "
                "use a strategy that starts from a parent (transfer, finetune) or drop parent"
            )
        frozen = self.strategy is not None and self.strategy.parent_use == "frozen"
        if role is not None:
            if self.parent is None:
                raise ValueError(
                    f"model '{self.name}': strategy '{self.strategy.name}' "  # type: ignore[union-attr]
                    f"{'depends on' if frozen else 'starts from'} a trained model; name it "
                    "with parent: <model id> (e.g. cnn-e10)"
                )
            if frozen:
                if given != ["architecture"]:
                    raise ValueError(
                        f"model '{self.name}': strategy '{self.strategy.name}' "  # type: ignore[union-attr]
                        f"trains a new network in front of parent '{self.parent}'; give its "
                        "architecture (e.g. huang2021_denoiser) and nothing else of "
                        f"{', '.join(_SOURCES[1:])}"
                    )
                return self
            if given:
                raise ValueError(
                    f"model '{self.name}' starts from parent '{self.parent}' and takes its "
                    f"network from it; remove {' and '.join(given)}"
                )
            if self.params:
                raise ValueError(
                    f"model '{self.name}': params belong to the parent's architecture entry"
                )
            return self
        if len(given) != 1:
            raise ValueError(
                f"model '{self.name}' needs exactly one of architecture (a registered network "
                "that robustlab trains), factory ('package.module:name' or 'file.py:name'; "
                "pretrained with weights, trained without), torchscript (a TorchScript file) "
                "or a composite of other models of the study (ensemble, master_slave, "
                f"adaptive_filter, denoised); it gives {' and '.join(given) or 'none'}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"model '{self.name}': seeds must be distinct, got {self.seeds}")
        misplaced = {
            "params": (
                bool(self.params) and self.architecture is None,
                "params belong to architecture; a factory takes factory_params",
            ),
            "factory_params": (
                bool(self.factory_params) and self.factory is None,
                "factory_params belong to factory",
            ),
            "weights": (
                self.weights is not None and self.factory is None,
                "weights go with factory (a TorchScript file holds its own weights; an "
                "architecture is trained by robustlab)",
            ),
            "normalize": (
                self.normalize is not None and self.architecture is not None,
                "a registered architecture normalises its input itself; set its mean / std "
                "params (see `robustlab list`)",
            ),
        }
        for key, (wrong, why) in misplaced.items():
            if wrong:
                raise ValueError(f"model '{self.name}': {key}: {why}")
        if self.pretrained or self.composite is not None:
            fields = type(self).model_fields
            changed = [
                f
                for f in _TRAINING_FIELDS
                if getattr(self, f) != fields[f].get_default(call_default_factory=True)
            ]
            if changed:
                what = "built from other models" if self.composite else "pretrained"
                raise ValueError(
                    f"model '{self.name}' is {what} and evaluated as it is; remove "
                    f"{', '.join(changed)} (robustlab does not train it)"
                )
        return self

    @property
    def strategy_name(self) -> str:
        """The training strategy's name (``standard`` when none is given)."""
        return self.strategy.name if self.strategy is not None else "standard"

    @property
    def composite(self) -> str | None:
        """The composite source this entry uses (``ensemble``, ...), or None."""
        return next((k for k in _COMPOSITES if getattr(self, k) is not None), None)

    @property
    def pretrained(self) -> bool:
        """Whether the model is evaluated as given (TorchScript, or factory with weights)."""
        return self.torchscript is not None or self.weights is not None

    def ids(self) -> list[str]:
        """The study's ids of this entry.

        ``<name>`` if pretrained or a composite, else ``<name>-e<epochs>`` (``-s<seed>``
        added per seed when ``seeds`` is given), epochs first.
        """
        if self.pretrained or self.composite is not None:
            return [self.name]
        return [f"{self.name}-e{e}{suffix}" for e, _, suffix in self.variants()]

    def variants(self) -> list[tuple[int, int, str]]:
        """``(epochs, seed, id suffix after the epochs)`` of every trained copy of this entry."""
        if not self.seeds:
            return [(e, self.seed, "") for e in self.epochs]
        return [(e, s, f"-s{s}") for e in self.epochs for s in self.seeds]

    @field_validator("epochs")
    @classmethod
    def _positive(cls, epochs: list[int]) -> list[int]:
        if any(e < 1 for e in epochs):
            raise ValueError("every entry of epochs must be >= 1")
        return sorted(set(epochs))


def _fractions(value: Any) -> Any:
    if isinstance(value, list):
        return [_fractions(v) for v in value]
    return fraction_value(value)


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
        if isinstance(value, dict):
            # A fraction given as text from Python ({"eps": "8/255"}) means what YAML reads.
            value = dict(value)
            for key in ("params", "grid"):
                if isinstance(value.get(key), dict):
                    value[key] = {k: _fractions(v) for k, v in value[key].items()}
        return value

    @model_validator(mode="after")
    def _default_label(self) -> PieceConfig:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        return self


class DefenseConfig(PieceConfig):
    """An input defence in front of every model (``none`` for the bare model).

    ``denoiser:model=<id>`` puts a denoiser trained by this study in front of every model
    (the study checks the id; the network exists only once trained).
    """

    @model_validator(mode="after")
    def _known(self) -> DefenseConfig:
        with _as_value_error():
            DEFENSES.check_parameters(self.name, self.params)
            if self.study_denoiser is not None:
                # Everything but the network, which the study trains before using it.
                check_denoiser_params(**self.params)
            else:
                DEFENSES.create(self.name, **self.params)  # out-of-range values fail here
        return self

    @model_validator(mode="after")
    def _denoiser_label(self) -> DefenseConfig:
        # Two denoisers of one study differ by model: say which in the default label.
        if self.study_denoiser is not None and self.label == self.name:
            object.__setattr__(self, "label", f"denoiser({self.study_denoiser})")
        return self

    @property
    def study_denoiser(self) -> str | None:
        """The id of the study's denoiser this defence runs (``denoiser:model=<id>``), if any."""
        if self.name == "denoiser" and self.params.get("model") is not None:
            return str(self.params["model"])
        return None


class SweptPieceConfig(PieceConfig):
    """A piece with a grid of swept values: every combination is one setting."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)

    def registered_severity(self) -> str | None:
        """The piece's registered severity parameter (each kind of piece says which)."""
        raise NotImplementedError(type(self).__name__)

    @property
    def swept(self) -> str | None:
        """The parameter reported as ``severity``: the registered one if swept, else the first."""
        severity = self.registered_severity()
        if severity in self.grid:
            return severity
        return next(iter(self.grid), None)

    def settings(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid, merged over the fixed parameters."""
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        return [{**self.params, **dict(zip(keys, combo, strict=True))} for combo in combos]


class DegradationConfig(SweptPieceConfig):
    """A degradation, its fixed parameters and the grid of swept values."""

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

    def registered_severity(self) -> str | None:
        """The degradation's registered severity parameter."""
        return DEGRADATIONS.entry(self.name).severity


class AttackConfig(SweptPieceConfig):
    """An adversarial attack, its swept grid and the protocols it is evaluated under.

    ``grid`` values are lists or the name of a grid of :mod:`robustlab.attack.grids`
    (``grid: {eps: huang2021}``). ``oblivious`` attacks the bare classifier and passes the
    examples through each defence; ``adaptive`` attacks the whole defended pipeline (exact
    gradients, BPDA for non-differentiable defences, EOT for random ones; ``gradient: bpda``
    uses BPDA's identity even where exact gradients exist). ``transfer`` crafts the examples
    on another model of the study, ``source`` (huang2021 Sec. 5: examples made on the standard
    classifier, evaluated on an adversarially trained one, bare or behind a denoiser), and
    evaluates every model through each defence on them.
    """

    protocols: list[Literal["oblivious", "adaptive", "transfer"]] = Field(
        default_factory=lambda: ["oblivious", "adaptive"],  # type: ignore[arg-type]
        min_length=1,
    )
    source: str | None = Field(
        None, description="model id the transfer protocol crafts its examples on"
    )
    gradient: Literal["auto", "exact", "bpda"] = "auto"
    eot_samples: int = Field(16, ge=1, description="gradient draws per step on random defences")

    @field_validator("grid", mode="before")
    @classmethod
    def _named_grids(cls, grid: Any) -> Any:
        if not isinstance(grid, dict):
            return grid
        from robustlab.attack.grids import named_grid

        with _as_value_error():
            return {k: named_grid(v) if isinstance(v, str) else v for k, v in grid.items()}

    @model_validator(mode="after")
    def _known(self) -> AttackConfig:
        from robustlab.attack import ATTACKS

        with _as_value_error():
            ATTACKS.check_parameters(self.name, {**self.params, **dict.fromkeys(self.grid, 0)})
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid of attack '{self.name}' gives no values for '{key}'")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols of attack '{self.label}' repeat: {self.protocols}")
        if ("transfer" in self.protocols) != (self.source is not None):
            raise ValueError(
                f"attack '{self.label}': the transfer protocol and source go together; "
                + (
                    "name the model the examples are crafted on with source: <model id>"
                    if self.source is None
                    else "add transfer to protocols (or drop source)"
                )
            )
        with _as_value_error():
            for params in self.settings():  # out-of-range values fail here, before any work
                ATTACKS.create(self.name, **params)
        return self

    def registered_severity(self) -> str | None:
        """The attack's registered severity parameter (``eps`` for the gradient attacks)."""
        from robustlab.attack import ATTACKS

        return ATTACKS.entry(self.name).severity


class ReferenceTable(_Strict):
    """Published numbers to put beside ours: one table of a paper.

    Rows are the defences of one ``model`` (lin2022's tables), or, with ``rows_are: models``,
    models of the study behind one ``defense`` (cavey's and ghosh2018's tables compare
    training strategies). With ``protocol``, ``degradation`` names an attack label of the
    study and the cells are its robust accuracies under that protocol (huang2021's tables).
    ``improvement`` adds ghosh2018's ``(d' - d) / (c - d)`` column, with ``c`` and ``d`` the
    ``baseline`` row's clean and last-column values and ``d'`` each row's last-column value; its
    mapping holds the paper's value per row.
    """

    title: str
    model: str | None = Field(None, description="model id in this study, e.g. cnn-e10")
    rows_are: Literal["defenses", "models"] = "defenses"
    defense: str = Field("none", description="the defence of every row when rows are models")
    degradation: str
    metric: Literal["errors", "accuracy"] = "errors"
    n: int | None = Field(None, description="test set size the paper counted errors on")
    columns: list[float | None] = Field(description="severities; null for the clean column")
    rows: dict[str, list[float | None]] = Field(
        description="defence label (or model id) -> values per column"
    )
    protocol: Literal["oblivious", "adaptive", "transfer"] | None = Field(
        None,
        description="when degradation names an attack of the study: the protocol whose cells "
        "fill the table (oblivious: huang2021's own protocol)",
    )
    baseline: str | None = Field(None, description="the row (model id) c and d come from")
    improvement: dict[str, float | None] | None = Field(
        None, description="the paper's (d' - d) / (c - d) per row"
    )
    train_accuracy: dict[str, float | None] | None = Field(
        None, description="the paper's training accuracy per row (model id), as a fraction"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceTable:
        if self.rows_are == "defenses" and self.model is None:
            raise ValueError(f"reference table '{self.title}' needs model (rows are defences)")
        for label, values in self.rows.items():
            if len(values) != len(self.columns):
                raise ValueError(
                    f"reference table '{self.title}': row '{label}' has {len(values)} values "
                    f"for {len(self.columns)} columns"
                )
        if self.improvement is not None:
            if self.baseline is None or self.baseline not in self.rows:
                raise ValueError(
                    f"reference table '{self.title}': improvement needs baseline, one of its rows"
                )
            if None not in self.columns:
                raise ValueError(
                    f"reference table '{self.title}': improvement needs a clean column (null)"
                )
        return self

    def cell(self, row: str, column: float | None) -> tuple[str, str, str, float | None]:
        """The stats key ``(model, defence, setting, severity)`` of a row and column."""
        setting = "clean" if column is None else self.degradation
        if self.rows_are == "models":
            return (row, self.defense, setting, column)
        assert self.model is not None
        return (self.model, "none" if column is None else row, setting, column)


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


class MinimalNoiseConfig(_Strict):
    """aghdam2016's minimal-noise search (Section 3) on the first test images, every model.

    ``ga`` and ``szegedy`` hold the parameters of
    :class:`robustlab.attack.minimal_noise.GeneticParams` and ``SzegedyParams``.
    """

    images: int = Field(100, ge=1, description="search on the first N test images")
    methods: list[str] = Field(
        default_factory=lambda: ["ga", "szegedy"],
        min_length=1,
        description="ga, szegedy, or any registered minimum-norm attack (fmn)",
    )
    ga: dict[str, Any] = Field(default_factory=dict, description="genetic algorithm parameters")
    szegedy: dict[str, Any] = Field(default_factory=dict, description="Szegedy solver parameters")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="parameters of the other minimum-norm methods, by name (fmn: {steps: 200})",
    )
    max_batch: int = Field(8192, ge=1, description="most images per forward pass (memory)")
    examples: int = Field(6, ge=0, le=32, description="images shown in the report's figure")

    @model_validator(mode="after")
    def _known(self) -> MinimalNoiseConfig:
        from robustlab.attack import ATTACKS, create_attack
        from robustlab.attack.minimal_noise import GeneticParams, SzegedyParams, make_params

        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"minimal_noise methods repeat: {self.methods}")
        minimum_norm = [e.name for e in ATTACKS if getattr(e.factory, "minimum_norm", False)]
        for method in self.methods:
            if method not in minimum_norm:
                raise ValueError(
                    f"minimal_noise method {method!r} is not a minimum-norm attack; valid: "
                    f"{', '.join(minimum_norm)}"
                )
        stray = sorted(set(self.params) - set(self.methods))
        if stray:
            raise ValueError(
                f"minimal_noise params given for {stray}, which are not among the methods "
                f"{self.methods}; add them to methods or remove their params"
            )
        with _as_value_error():
            make_params(GeneticParams, self.ga)
            make_params(SzegedyParams, self.szegedy)
            for method, values in self.params.items():
                if method in ("ga", "szegedy"):
                    raise ValueError(f"give {method}'s parameters in the '{method}:' block")
                create_attack(method, **values)
        return self


class CertifyConfig(_Strict):
    """Randomised smoothing (Cohen et al. 2019): certified L2 radii of every model of the study.

    Every model is smoothed bare (no input defence) at each ``sigma`` on the first ``images``
    test images; one resumable job per model and sigma. ``n`` defaults to 10,000 estimation
    draws, a tenth of Cohen et al.'s 100,000, to stay affordable on a CPU: the cost is a cap on
    what can be certified, ``sigma * Phi^{-1}(alpha ** (1 / n))`` = 3.20 sigma instead of 3.81
    sigma at ``alpha = 0.001`` (0.80 instead of 0.95 at sigma 0.25), and slightly smaller radii
    everywhere (``p_lower`` is a looser bound).

    Example:
        >>> CertifyConfig(sigma=[0.25, 0.5]).report_radii()
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    """

    sigma: list[float] = Field(
        description="noise levels in [0, 1] pixel units (Cohen: 0.12, 0.25, 0.5, 1.0; MNIST: "
        "0.25, 0.5)",
    )
    n0: int = Field(100, ge=1, description="selection draws per image (picks the top class)")
    n: int = Field(10_000, ge=1, description="estimation draws per image (Cohen: 100,000)")
    alpha: float = Field(0.001, description="failure probability of every certificate")
    images: int = Field(500, ge=1, description="certify the first N test images")
    batch_size: int = Field(1000, ge=1, description="noisy images per forward pass (memory)")
    defenses: list[str] = Field(
        default_factory=lambda: ["none"],
        min_length=1,
        description="labels of the study's defences to smooth in front of each model "
        "(denoised smoothing: a filter or denoiser, then the classifier)",
    )
    radii: list[float] | None = Field(
        None, description="report radii; default a grid up to the largest certifiable radius"
    )

    @field_validator("sigma")
    @classmethod
    def _positive_sigmas(cls, values: list[float]) -> list[float]:
        if not values:
            raise ValueError("sigma needs at least one noise level, e.g. sigma: [0.25, 0.5]")
        for value in values:
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"every sigma must be a finite number > 0 in [0, 1] pixel units, got "
                    f"{value}; e.g. sigma: [0.25, 0.5] (Cohen et al. used 0.12, 0.25, 0.5, 1.0)"
                )
        if len(set(values)) != len(values):
            raise ValueError(f"sigma repeats a value: {values}; list each noise level once")
        return values

    @field_validator("alpha")
    @classmethod
    def _probability(cls, alpha: float) -> float:
        if not 0.0 < alpha < 1.0:
            raise ValueError(
                f"alpha must lie strictly between 0 and 1, got {alpha}; e.g. alpha: 0.001"
            )
        return alpha

    @field_validator("radii")
    @classmethod
    def _sorted_radii(cls, radii: list[float] | None) -> list[float] | None:
        if radii is None:
            return None
        if not radii or any(not (math.isfinite(r) and r >= 0) for r in radii):
            raise ValueError(
                f"radii must be finite numbers >= 0, got {radii}; e.g. radii: [0, 0.25, 0.5], "
                "or leave radii out for a grid up to the largest certifiable radius"
            )
        return sorted(set(radii))

    @model_validator(mode="after")
    def _reachable(self) -> CertifyConfig:
        largest = max(self.largest_radius(s) for s in self.sigma)
        beyond = [r for r in self.radii or [] if r > largest]
        if beyond:
            raise ValueError(
                f"radii: {beyond} lie beyond the largest radius n={self.n} draws can certify at "
                f"any sigma ({largest:.3f} = max sigma x Phi^-1(alpha^(1/n))): certified "
                "accuracy there is 0 by construction; drop them, or raise n or sigma"
            )
        return self

    def largest_radius(self, sigma: float) -> float:
        """The largest radius certifiable at ``sigma`` with this section's ``n`` and alpha."""
        from robustlab.certify.radii import largest_radius

        return largest_radius(sigma, self.n, self.alpha)

    def report_radii(self) -> list[float]:
        """``radii``, or a grid from 0 up to the largest radius certifiable at any sigma."""
        from robustlab.certify.radii import radius_grid

        if self.radii is not None:
            return list(self.radii)
        return radius_grid(max(self.largest_radius(s) for s in self.sigma))


#: Upper bounds that keep a typo (``trials: 1e15``) from a run that would never end.
MAX_TRIALS = 1_000
MAX_COPIES = 100_000


_STUDY_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_study_name(name: str) -> str:
    """``name`` if it can name a run directory (``runs/<name>``), else a ``ValueError``.

    Example:
        >>> check_study_name("mnist-noise")
        'mnist-noise'
    """
    if not _STUDY_NAME.fullmatch(name):
        raise ValueError(
            f"study name {name!r} names the run directory runs/<name>: use only letters, "
            "digits, '_', '-' and '.', e.g. mnist-noise"
        )
    if set(name) <= {"."}:
        raise ValueError(
            f"study name '{name}' is made of dots only; it names the run directory "
            "runs/<name>, and '.' or '..' would be the current or parent folder; use letters"
        )
    return name


class StudyConfig(_Strict):
    """A whole study: the root of the YAML file."""

    name: str = Field(description="letters, digits, _ - and .; names runs/<name>")
    description: str = ""
    seed: int = 0
    dataset: DatasetConfig
    models: list[ModelConfig] = Field(min_length=1)
    degradations: list[DegradationConfig] = Field(default_factory=list)
    attacks: list[AttackConfig] = Field(
        default_factory=list, description="adversarial attacks, oblivious and adaptive"
    )
    defenses: list[DefenseConfig] = Field(default_factory=lambda: [DefenseConfig(name="none")])
    trials: int = Field(
        1, ge=1, le=MAX_TRIALS, description="independent draws of every random degradation"
    )
    copies: int = Field(
        1,
        ge=1,
        le=MAX_COPIES,
        description="Monte-Carlo degraded copies of every test image per trial",
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
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig, description="local (default) or ray; see docs/ray.md"
    )
    reference: Reference | None = None
    minimal_noise: MinimalNoiseConfig | None = Field(
        None, description="aghdam2016's minimal-noise search (GA vs Szegedy et al.)"
    )
    certify: CertifyConfig | None = Field(
        None, description="certified L2 radii by randomised smoothing (Cohen et al. 2019)"
    )

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        return check_study_name(name)

    @field_validator("models", mode="before")
    @classmethod
    def _expand_model_grids(cls, entries: Any) -> Any:
        """Replace every model entry with a ``grid`` by one entry per grid point."""
        if not isinstance(entries, list):
            return entries
        expanded: list[Any] = []
        for entry in entries:
            if isinstance(entry, dict) and "grid" in entry:
                with _as_value_error():
                    expanded += expand_model_grid(entry)
            else:
                expanded.append(entry)
        return expanded

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
            ("attack", [a.label for a in self.attacks]),
        ):
            dupes = {x for x in labels if labels.count(x) > 1}
            if dupes:
                fix = (
                    "give each model entry its own name"
                    if kind == "model"
                    else "give the entries that share a name a label: each (e.g. label: "
                    "pgd-40) to tell them apart"
                )
                raise ValueError(f"{kind} labels must be unique; repeated: {sorted(dupes)}; {fix}")
        _check_parents(self.models)
        for defense in self.defenses:
            _check_denoiser_defense(defense, self.models)
        if self.certify is not None:
            known = [d.label for d in self.defenses]
            unknown = [d for d in self.certify.defenses if d not in known]
            if unknown or len(set(self.certify.defenses)) != len(self.certify.defenses):
                raise ValueError(
                    f"certify.defenses: {unknown or self.certify.defenses} must be distinct "
                    f"labels of the study's defences ({', '.join(known)}); add the defence "
                    "under defenses: first"
                )
        for table in self.reference.tables if self.reference is not None else []:
            if table.protocol is None:
                continue
            attack = next((a for a in self.attacks if a.label == table.degradation), None)
            if attack is None or table.protocol not in attack.protocols:
                raise ValueError(
                    f"reference table '{table.title}': with protocol {table.protocol}, "
                    f"degradation must be the label of an attack of this study run under it; "
                    f"attacks: {', '.join(f'{a.label} {a.protocols}' for a in self.attacks)}"
                )
        owner = {i: m for m in self.models for i in m.ids()}
        for attack in self.attacks:
            if attack.source is None:
                continue
            if attack.source not in owner:
                raise ValueError(
                    f"attack '{attack.label}': source '{attack.source}' is not a model id of "
                    f"this study; valid: {', '.join(owner)}"
                )
            if artefact_kind(owner[attack.source]) != "classifier":
                raise ValueError(
                    f"attack '{attack.label}': source '{attack.source}' must be a classifier"
                )
        if self.baseline_model is not None:
            ids = [i for m in self.models for i in m.ids()]
            if self.baseline_model not in ids:
                raise ValueError(
                    f"baseline_model '{self.baseline_model}' is not a model of this study; "
                    f"valid: {', '.join(ids)}"
                )
        return self

    def run_dir(self, base: str | os.PathLike[str] | None = None) -> Path:
        """The run directory: ``base`` if given, else ``output``, else ``runs/<name>``."""
        return Path(base or self.output or Path("runs") / self.name)


_GRID_ROOTS = ("params", "strategy", "factory_params")


def _set_path(entry: dict[str, Any], path: str, value: Any) -> None:
    """Set ``entry[a][b]...[z] = value`` for ``path`` ``a.b...z``, creating mappings."""
    *parents, leaf = path.split(".")
    target = entry
    for part in parents:
        child = target.get(part)
        if isinstance(child, str) and part == "strategy" and target is entry:
            name, params = parse_spec(child)
            child = {"name": name, "params": params}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"model grid key '{path}': '{part}' is not a mapping")
        child = copy.deepcopy(child)
        target[part] = child
        target = child
    target[leaf] = value


def _grid_value_name(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "x"


def expand_model_grid(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One model entry per point of its ``grid`` (cavey's Table I ablation, training levels).

    Grid keys are dotted paths into the entry: ``params.batch_norm`` (architecture
    parameters), ``strategy.params.perturbation.levels`` (a strategy parameter; a spec-string
    strategy is expanded to a mapping first), ``learning_rate``, ``seed``... Each point's name
    is the entry's name followed by ``-<leaf>-<value>`` per key, and its ``sweep`` records the
    point, so reports can draw accuracy against it.

    Example:
        >>> [m["name"] for m in expand_model_grid({
        ...     "name": "cavey", "architecture": "cavey_cifar10",
        ...     "grid": {"params.batch_norm": [True, False], "params.dropout": [0.2, 0.0]}})]
        ['cavey-batch_norm-true-dropout-0.2', 'cavey-batch_norm-true-dropout-0.0', \
'cavey-batch_norm-false-dropout-0.2', 'cavey-batch_norm-false-dropout-0.0']
    """
    grid = entry.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"model '{entry.get('name')}': grid must map parameter paths to lists of values, "
            "e.g. {params.batch_norm: [true, false]}"
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"model '{entry.get('name')}': grid '{key}' needs a non-empty list of values"
            )
    base = {k: v for k, v in entry.items() if k != "grid"}
    out = []
    for combo in itertools.product(*grid.values()):
        point = dict(zip(grid, combo, strict=True))
        model = copy.deepcopy(base)
        for path, value in point.items():
            _set_path(model, path, value)
        suffix = "-".join(f"{p.split('.')[-1]}-{_grid_value_name(v)}" for p, v in point.items())
        model["name"] = f"{base.get('name', 'model')}-{suffix}"
        model["sweep"] = point
        out.append(model)
    return out


def _resolve_id(model: ModelConfig, what: str, ref: str, models: list[ModelConfig]) -> list[str]:
    """The ids ``ref`` names: a model id, or an entry name standing for all its ids."""
    owner = {i for m in models for i in m.ids()}
    by_name = {m.name: m for m in models}
    if ref in owner and ref != model.name:
        return [ref]
    if ref in by_name and ref != model.name:
        return by_name[ref].ids()
    if ref == model.name:
        raise ValueError(f"model '{model.name}': a composite cannot be built from itself")
    raise ValueError(
        f"model '{model.name}': {what} '{ref}' is not a model id or entry name of this study; "
        f"valid ids: {', '.join(sorted(owner - {model.name}))}"
    )


def _one_id(model: ModelConfig, what: str, ref: str, models: list[ModelConfig]) -> str:
    ids = _resolve_id(model, what, ref, models)
    if len(ids) != 1:
        raise ValueError(
            f"model '{model.name}': {what} '{ref}' is an entry with {len(ids)} models "
            f"({', '.join(ids)}); name one id"
        )
    return ids[0]


def model_roles(model: ModelConfig, models: list[ModelConfig]) -> list[tuple[str, str]]:
    """``(role, id)`` of every model ``model`` is built from, in the order its module takes them.

    A trained model's parent (role ``start``, or its strategy's role); an ensemble's members
    (``member1``, ...; an entry name stands for all its ids); a master-slave router's master
    (``master``) and branches (``branch1``, ...); an adaptive filter's ``detector`` and
    ``classifier``; a denoised model's ``denoiser`` and ``classifier``.

    Raises:
        ValueError: for a reference that is neither a model id nor an entry name, or repeats.
    """
    roles: list[tuple[str, str]]
    if model.ensemble is not None:
        ids = [
            i
            for ref in model.ensemble.members
            for i in _resolve_id(model, "ensemble member", ref, models)
        ]
        roles = [(f"member{k}", i) for k, i in enumerate(ids, 1)]
    elif model.master_slave is not None:
        spec = model.master_slave
        roles = [("master", _one_id(model, "master", spec.master, models))] if spec.master else []
        roles += [
            (f"branch{k}", _one_id(model, "branch", ref, models))
            for k, ref in enumerate(spec.branches, 1)
        ]
    elif model.adaptive_filter is not None:
        spec_af = model.adaptive_filter
        roles = [
            ("detector", _one_id(model, "detector", spec_af.detector, models)),
            ("classifier", _one_id(model, "model", spec_af.model, models)),
        ]
    elif model.denoised is not None:
        roles = [
            ("denoiser", _one_id(model, "denoiser", model.denoised.denoiser, models)),
            ("classifier", _one_id(model, "model", model.denoised.model, models)),
        ]
    else:
        role = model.strategy.parent_role if model.strategy is not None else None
        return [(role or "start", model.parent)] if model.parent is not None else []
    ids = [i for _, i in roles]
    if len(set(ids)) != len(ids):
        raise ValueError(f"model '{model.name}': the models it is built from repeat: {ids}")
    return roles


def model_dependencies(model: ModelConfig, models: list[ModelConfig]) -> list[str]:
    """The ids ``model`` is built from (:func:`model_roles` without the roles)."""
    return [i for _, i in model_roles(model, models)]


def _bins_of(entry: ModelConfig) -> list[str] | None:
    """The bin names of a quality network entry, or None for another kind of model."""
    if entry.strategy is None or entry.strategy.name != "quality":
        return None
    return [b["name"] for b in entry.strategy.params.get("bins", [])]


def _branches_of(entry: ModelConfig) -> list[str] | None:
    """The bin names of a ``joint_branches`` entry (one branch each), or None for another."""
    if entry.strategy is None or entry.strategy.name != "joint_branches":
        return None
    return [b["name"] for b in entry.strategy.params.get("bins", [])]


def artefact_kind(entry: ModelConfig) -> str:
    """What an entry's models are: ``classifier``, ``quality`` or ``denoiser``."""
    if entry.pretrained or entry.composite is not None:
        return "classifier"
    from robustlab.train.strategy import strategy_entry

    return str(getattr(strategy_entry(entry.strategy_name).factory, "kind", "classifier"))


#: The kind of model each role of a composite (or a denoiser's parent) must be.
_ROLE_KINDS = {"master": "quality", "detector": "quality", "denoiser": "denoiser"}
_KIND_HINTS = {
    "quality": "a quality network (strategy: quality, with its bins)",
    "denoiser": "a denoiser (strategy: denoise or advfilter)",
    "classifier": "a classifier",
}


def _check_composite_kinds(m: ModelConfig, models: list[ModelConfig]) -> None:
    """A composite's quality networks are quality networks, its classifiers classifiers, ..."""
    owner = {i: e for e in models for i in e.ids()}
    for role, pid in model_roles(m, models):
        wanted = _ROLE_KINDS.get(role, "classifier")
        if m.composite is None and not (
            m.strategy is not None and m.strategy.parent_use == "frozen"
        ):
            continue
        if pid not in owner:
            continue  # an unknown parent: _check_parents names it
        kind = artefact_kind(owner[pid])
        if kind != wanted:
            raise ValueError(
                f"model '{m.name}': {role} '{pid}' must be {_KIND_HINTS[wanted]}; it is "
                f"{_KIND_HINTS[kind]}"
            )
    if m.master_slave is not None:
        branches: list[str] = []  # a name per branch: the bin of a joint network, else its id
        for ref in m.master_slave.branches:
            pid = _one_id(m, "branch", ref, models)
            joint = _branches_of(owner[pid])
            branches += joint if joint is not None else [pid]
        if len(branches) < 2:
            raise ValueError(
                f"model '{m.name}': a master-slave router needs at least two branches, got "
                f"{len(branches)} ({', '.join(branches)}); list two models or one trained by "
                "joint_branches"
            )
        if m.master_slave.master is not None:
            master = owner[_one_id(m, "master", m.master_slave.master, models)]
            bins = _bins_of(master) or []
            if len(bins) != len(branches):
                raise ValueError(
                    f"model '{m.name}': master '{m.master_slave.master}' has {len(bins)} bins "
                    f"({', '.join(bins)}) but {len(branches)} branches are given "
                    f"({', '.join(branches)}); give one branch per bin, in the master's bin "
                    "order"
                )
            for ref in m.master_slave.branches:
                joint = _branches_of(owner[_one_id(m, "branch", ref, models)])
                if joint is not None and len(m.master_slave.branches) == 1 and joint != bins:
                    raise ValueError(
                        f"model '{m.name}': branch model '{ref}' was trained on the bins "
                        f"{', '.join(joint)} but master '{m.master_slave.master}' predicts "
                        f"{', '.join(bins)}; train both on the same bins, in the same order"
                    )
    if m.denoised is not None:
        _check_denoised(m, owner[_one_id(m, "denoiser", m.denoised.denoiser, models)])
    if m.adaptive_filter is not None and m.adaptive_filter.filters is not None:
        detector = owner[_one_id(m, "detector", m.adaptive_filter.detector, models)]
        bins = _bins_of(detector) or []
        given = list(m.adaptive_filter.filters)
        if sorted(given) != sorted(bins):
            raise ValueError(
                f"model '{m.name}': filters must map every bin of detector "
                f"'{m.adaptive_filter.detector}' ({', '.join(bins)}) and nothing else; got "
                f"{', '.join(given) or 'none'}"
            )


def _check_denoised(m: ModelConfig, denoiser: ModelConfig) -> None:
    """A denoised entry's head and output fit its denoiser's network (before any training)."""
    assert m.denoised is not None
    spec = m.denoised
    _check_denoiser_choice(f"model '{m.name}'", spec.denoiser, denoiser, spec.head, spec.output)


def _check_denoiser_defense(defense: DefenseConfig, models: list[ModelConfig]) -> None:
    """``denoiser:model=<id>`` names one trained denoiser of the study; head and output fit."""
    ref = defense.study_denoiser
    if ref is None:
        return
    owner = {i: m for m in models for i in m.ids()}
    where = f"defence '{defense.label}'"
    if ref not in owner:
        denoisers = [i for i, m in owner.items() if artefact_kind(m) == "denoiser"]
        raise ValueError(
            f"{where}: model '{ref}' is not a model id of this study; give the id of a denoiser "
            f"entry (<name>-e<epochs>): {', '.join(denoisers) or 'the study has none'}"
        )
    entry = owner[ref]
    if entry.pretrained or artefact_kind(entry) != "denoiser":
        raise ValueError(
            f"{where}: model '{ref}' must be {_KIND_HINTS['denoiser']}; it is "
            f"{'a pretrained model' if entry.pretrained else _KIND_HINTS[artefact_kind(entry)]}"
        )
    _check_denoiser_choice(
        where, ref, entry, defense.params.get("head"), str(defense.params.get("output", "fused"))
    )


def _check_denoiser_choice(
    where: str, ref: str, denoiser: ModelConfig, head: int | None, output: str
) -> None:
    """The chosen head and output exist in the denoiser entry's network."""
    params = denoiser.params
    advfilter = denoiser.architecture == "huang2021_advfilter"
    heads = int(params.get("heads", 1)) if not advfilter else None
    if output != "fused" and not advfilter:
        raise ValueError(
            f"{where}: output {output} picks a decoder of an AdvFilter; denoiser "
            f"'{ref}' is a {denoiser.architecture}"
        )
    if head is not None and (heads is None or head >= heads):
        raise ValueError(
            f"{where}: head {head} does not exist; denoiser '{ref}' has "
            + ("no heads" if heads is None else f"{heads} (0..{heads - 1})")
        )
    if heads is not None and heads > 1 and head is None and params.get("default_head") is None:
        raise ValueError(
            f"{where}: denoiser '{ref}' has {heads} heads and no "
            "default_head; choose one with head: <0-based index> (huang2021 evaluates each)"
        )


def _check_parents(models: list[ModelConfig]) -> None:
    """Every parent is a trained model of the study and no model descends from itself."""
    owner = {i: m for m in models for i in m.ids()}
    composites = {m.name: model_dependencies(m, models) for m in models if m.composite}
    built: set[str] = {m.name for m in models if m.composite is None}
    waiting = dict(composites)
    while waiting:  # composites whose parts are all built can be built (no cycle)
        ready = [n for n, ids in waiting.items() if all(owner[i].name in built for i in ids)]
        if not ready:
            raise ValueError(
                f"models {sorted(waiting)}: the models they are built from form a cycle (a "
                "composite cannot contain itself, directly or through another composite)"
            )
        for name in ready:
            built.add(name)
            del waiting[name]
    for m in models:
        _check_composite_kinds(m, models)
    for m in models:
        if m.parent is None:
            continue
        parent = owner.get(m.parent)
        if parent is None:
            raise ValueError(
                f"model '{m.name}': parent '{m.parent}' is not a model id of this study; valid: "
                f"{', '.join(owner)} (ids are <name>-e<epochs> for trained models)"
            )
        if parent.pretrained or parent.composite is not None:
            kind = (
                "a pretrained model" if parent.pretrained else f"a composite ({parent.composite})"
            )
            raise ValueError(
                f"model '{m.name}': parent '{m.parent}' is {kind}; a parent must be "
                "one robustlab trains (architecture, or factory without weights)"
            )
        seen = {m.name}
        while parent is not None:
            if parent.name in seen:
                raise ValueError(
                    f"model '{m.name}': its parents form a cycle through '{parent.name}'"
                )
            seen.add(parent.name)
            parent = owner.get(parent.parent) if parent.parent is not None else None


def _yaml_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    if isinstance(err, DuplicateKeyError):
        return ConfigError(f"{path}: {problem}; {err.note}")
    return ConfigError(f"{path}: malformed YAML{where}: {problem}")


def _validation_error(
    source: str, err: ValidationError, lines: dict[Location, int] | None = None
) -> ConfigError:
    messages = []
    for issue in err.errors():
        where = tuple(issue["loc"])
        line = line_of(lines, where) if lines else None
        at = f" (line {line})" if line is not None else ""
        messages.append(f"  {dotted(where)}{at}: {issue['msg']}")
    return ConfigError(f"{source}: invalid study configuration:\n" + "\n".join(messages))


def _refuse_non_finite(data: Any, source: str, lines: dict[Location, int] | None) -> None:
    for where in non_finite(data):
        line = line_of(lines, where) if lines else None
        at = f" (line {line})" if line is not None else ""
        value = data
        for part in where:
            value = value[part]
        raise ConfigError(
            f"{source}: {dotted(where)}{at} {why_unusable(value)}; no piece can run with it and "
            "the stored configuration could not be read back: write a finite value in range"
        )


def parse_config(
    data: Any, source: str = "<config>", lines: dict[Location, int] | None = None
) -> StudyConfig:
    """Validate already-parsed YAML ``data`` into a :class:`StudyConfig`.

    ``lines`` (from :func:`robustlab.study_yaml.load_documents`) lets errors name the line.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a study must be a YAML mapping (key: value lines) or a dict, got "
            f"{type(data).__name__}"
        )
    _refuse_non_finite(data, source, lines)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise _validation_error(source, err, lines) from None
    except RobustlabError as err:
        raise ConfigError(f"{source}: {err}") from None


def _apply_bases(
    documents: list[tuple[Any, dict[Location, int]]], source: Path
) -> list[tuple[Any, dict[Location, int]]]:
    by_name: dict[str, dict[str, Any]] = {}
    merged = []
    for document, lines in documents:
        if isinstance(document, dict) and "base" in document:
            base = document["base"]
            at = f" (line {lines[('base',)]})" if ("base",) in lines else ""
            if not isinstance(base, str):
                raise ConfigError(
                    f"{source}: base{at} of study '{document.get('name')}' is a "
                    f"{type(base).__name__}; it names one earlier study of this file, e.g. "
                    f"base: {next(iter(by_name), 'mnist-study')}"
                )
            if base not in by_name:
                raise ConfigError(
                    f"{source}: study '{document.get('name')}' has base '{base}'{at}, which is "
                    f"not an earlier study of this file; earlier: {', '.join(by_name) or '(none)'}"
                )
            document = {**by_name[base], **{k: v for k, v in document.items() if k != "base"}}
        if isinstance(document, dict) and isinstance(document.get("name"), str):
            by_name[document["name"]] = document
        merged.append((document, lines))
    return merged


def _read_text(source: Path) -> str:
    try:
        raw = source.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read study file {source}: {err.strerror or err}") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(
            f"{source}: UTF-16 text; save the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}: not UTF-8 text (byte 0x{raw[err.start]:02x} at line {line}); save the "
            "file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def load_configs(path: str | os.PathLike[str]) -> list[StudyConfig]:
    """Read and validate every study of the file at ``path``.

    A file may hold several studies as YAML documents separated by ``---`` (e.g. the same
    experiment on MNIST and on Fashion-MNIST); each runs into its own run directory. A later
    document may start from an earlier one with ``base: <earlier name>``: it takes the earlier
    document's top-level keys and replaces those it sets itself. The YAML is read with
    :class:`robustlab.study_yaml.StudyLoader`: YAML 1.2 numbers (``1e-1`` is a float),
    fractions (``8/255``), and a key given twice is an error.

    Raises:
        ConfigError: naming the file and, for malformed YAML or a bad value, the line.
    """
    source = Path(path)
    if not source.is_file():
        what = "is a folder, not a file" if source.is_dir() else "not found"
        raise ConfigError(
            f"study file {source} {what} (resolved to {source.resolve()}); name a .yaml file, "
            "or a built-in study (robustlab list)"
        )
    try:
        documents = load_documents(_read_text(source))
    except yaml.YAMLError as err:
        raise _yaml_error(source, err) from None
    if not documents:
        raise ConfigError(f"{source}: the file holds no study")
    documents = _apply_bases(documents, source)
    configs = [
        parse_config(d, f"{source} (study {i + 1})" if len(documents) > 1 else str(source), lines)
        for i, (d, lines) in enumerate(documents)
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
