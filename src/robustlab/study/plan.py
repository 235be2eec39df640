"""The planner: a study expands into cells, model x defence x degradation setting x trial.

Cells that share a model, a degradation setting and a trial form a :class:`Group`: the executor
degrades each test batch once and sends it through every defence of the group, so all defences
(and all models) see exactly the same noisy images, a paired comparison. Every cell has a key
that hashes everything its numbers depend on; the results store uses it to skip finished cells.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"}, "trials": 2,
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1, 2]}],
    ...     "degradations": [{"name": "salt_pepper", "grid": {"amount": [0.1, 0.3]}}],
    ...     "defenses": ["none", "median"]})
    >>> plan = make_plan(cfg, data_fingerprint="abc")
    >>> len(plan.cells)  # 2 models x 2 defences x (1 clean + 2 amounts x 2 trials)
    20
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from robustlab.degrade import create_degradation
from robustlab.models.external import ExternalSource, factory_code_digest, file_digest
from robustlab.models.store import model_files
from robustlab.seeding import derive_seed
from robustlab.study.config import DatasetConfig, ModelConfig, StudyConfig, model_roles
from robustlab.train.loop import TrainingRecipe

#: Dataset parameters that change only how fast the data is read, never the data itself (the
#: data fingerprint does not depend on them): they are left out of every key.
SPEED_ONLY_DATASET_PARAMS = frozenset({"workers"})


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def dataset_key(dataset: DatasetConfig) -> dict[str, Any]:
    """The part of a key that identifies the dataset configuration.

    The configuration as dumped, less :data:`SPEED_ONLY_DATASET_PARAMS`; ``params`` is dropped
    when nothing else is left, so a study that sets none of them (or only speed settings) has
    the same keys as one written before dataset parameters existed.

    Example:
        >>> dataset_key(DatasetConfig(name="gtsrb", params={"workers": 2}))
        {'name': 'gtsrb', 'test_limit': None, 'train_limit': None}
    """
    dumped = dataset.model_dump()
    params = {
        k: v for k, v in dumped.pop("params", {}).items() if k not in SPEED_ONLY_DATASET_PARAMS
    }
    if params:
        dumped["params"] = params
    return dumped


def _compact(value: Any) -> str:
    """A parameter for one line: a list of named mappings (degradation bins) by its names."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in value)
    ):
        return "[" + ", ".join(v["name"] for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class PlannedModel:
    """One model of the study: trained (``<name>-e<epochs>``) or pretrained (``<name>``).

    A trained model has a ``recipe``; a pretrained one (TorchScript, or factory + weights) has
    a ``source`` instead, whose content hashes identify it.
    """

    id: str
    name: str
    recipe: TrainingRecipe | None
    source: ExternalSource | None = None
    parents: tuple[tuple[str, PlannedModel], ...] = ()  # (role, parent): the artefact graph
    description: str = ""  # where a pretrained model came from, once its source is not at hand
    # A model built from its parents without training: {"kind": "ensemble", "combine": ...}.
    composite: dict[str, Any] | None = None

    @property
    def epochs(self) -> int | None:
        """Training epochs, or None for a pretrained model."""
        return self.recipe.epochs if self.recipe is not None else None

    @property
    def architecture(self) -> str:
        """The registered architecture, or where a pretrained model comes from."""
        if self.recipe is not None:
            if self.recipe.architecture == "external_factory":
                return str(self.recipe.params.get("reference"))
            return self.recipe.architecture
        if self.composite is not None:
            return f"{self.composite['kind']} of {', '.join(self.parent_ids.values())}"
        return self.source.describe() if self.source is not None else self.description

    @property
    def training(self) -> str:
        """How it was trained, in one line (``pretrained`` for a given model)."""
        r = self.recipe
        if r is None:
            return "composite" if self.composite is not None else "pretrained"
        return f"{r.optimizer} lr={r.learning_rate:g} batch={r.batch_size}"

    @property
    def strategy(self) -> str:
        """The training strategy with its parameters (``pretrained`` for a given model)."""
        r = self.recipe
        if r is None:
            if self.composite is not None:
                from robustlab.study.composites import describe_composite

                return describe_composite(self.composite)
            return "pretrained"
        if not r.strategy_params:
            return r.strategy
        inner = ", ".join(f"{k}={_compact(v)}" for k, v in sorted(r.strategy_params.items()))
        return f"{r.strategy}({inner})"

    @property
    def evaluated(self) -> bool:
        """Whether the study's parts score this model (a quality network is only built on)."""
        return self.recipe is None or self.recipe.kind == "classifier"

    @property
    def parent_ids(self) -> dict[str, str]:
        """Role -> id of each parent."""
        return {role: parent.id for role, parent in self.parents}

    @property
    def length(self) -> str:
        """``N epochs``, ``pretrained`` or ``ensemble of K``, for headings."""
        if self.composite is not None:
            if self.composite["kind"] == "denoised":
                return "behind a denoiser"
            return f"{self.composite['kind']} of {len(self.parents)}"
        return f"{self.epochs} epochs" if self.epochs is not None else "pretrained"

    def to_json(self) -> dict[str, Any]:
        """The model as stored with the resolved plan (no files are read to restore it)."""
        return {
            "id": self.id,
            "name": self.name,
            "recipe": None if self.recipe is None else self.recipe.model_dump(mode="json"),
            "parents": [[role, parent.id] for role, parent in self.parents],
            "description": self.architecture,
            **({"composite": self.composite} if self.composite is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], known: dict[str, PlannedModel]) -> PlannedModel:
        """Restore a stored model; ``known`` holds its parents, restored before it."""
        recipe = data["recipe"]
        return cls(
            id=data["id"],
            name=data["name"],
            recipe=None if recipe is None else TrainingRecipe.model_validate(recipe),
            parents=tuple((role, known[pid]) for role, pid in data.get("parents", [])),
            description=data.get("description", ""),
            composite=data.get("composite"),
        )

    def key(self) -> dict[str, Any]:
        """What the model's outputs depend on, for cell keys (parents' keys included)."""
        if self.recipe is not None:
            key = self.recipe.model_dump()
            if self.parents:
                key["parents"] = {role: parent.key() for role, parent in self.parents}
            return key
        if self.composite is not None:
            return {
                "composite": self.composite,
                "members": [parent.key() for _, parent in self.parents],
            }
        assert self.source is not None
        return {"pretrained": self.source.key()}


@dataclass(frozen=True)
class Setting:
    """One degradation at one parameter setting (the clean setting is ``none``)."""

    label: str
    name: str
    params: dict[str, Any]
    severity_name: str | None
    severity: float | None
    random: bool

    @property
    def key(self) -> str:
        """Identity of the setting, independent of label."""
        return _digest({"name": self.name, "params": self.params})


@dataclass(frozen=True)
class DefenseSetting:
    """One input defence.

    A trained denoiser of the study as a defence (``denoiser:model=<id>``) carries the planned
    ``artefact`` (trained or taken from the cache before the cells that need it; its recipe
    joins their keys) and ``trained_for``, the classifier it was trained for. One that loads a
    file (``denoiser:path=...``) carries the file's content hash in ``digest``.
    """

    label: str
    name: str
    params: dict[str, Any]
    artefact: PlannedModel | None = None
    trained_for: str | None = None
    digest: str | None = None

    def key(self) -> list[Any]:
        """What the defence's outputs depend on, for cell keys."""
        key: list[Any] = [self.name, self.params]
        if self.artefact is not None:
            key.append(self.artefact.key())
        if self.digest is not None:
            key.append(self.digest)
        return key

    def to_json(self) -> dict[str, Any]:
        """The defence as stored with the resolved plan (its artefact by id)."""
        data: dict[str, Any] = {"label": self.label, "name": self.name, "params": self.params}
        if self.artefact is not None:
            data["artefact"] = self.artefact.id
        if self.trained_for is not None:
            data["trained_for"] = self.trained_for
        if self.digest is not None:
            data["digest"] = self.digest
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], known: dict[str, PlannedModel]) -> DefenseSetting:
        """A stored defence; its artefact is restored when ``known`` holds it."""
        artefact = data.get("artefact")
        return cls(
            data["label"],
            data["name"],
            data["params"],
            artefact=known.get(artefact) if artefact is not None else None,
            trained_for=data.get("trained_for"),
            digest=data.get("digest"),
        )


@dataclass(frozen=True)
class Cell:
    """The smallest unit of results: one row of the results table."""

    key: str
    model: PlannedModel
    defense: DefenseSetting
    setting: Setting
    trial: int


@dataclass(frozen=True)
class Group:
    """Cells sharing model, setting and trial: evaluated in one pass over the test set."""

    model: PlannedModel
    setting: Setting
    trial: int
    seed: int
    cells: tuple[Cell, ...]
    copies: int = 1


@dataclass
class Plan:
    """The expanded degradation sweep of a study."""

    models: list[PlannedModel]
    settings: list[Setting]
    defenses: list[DefenseSetting]
    groups: list[Group]
    cells: list[Cell] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Settings, defences and cells as stored with the resolved plan (groups are not)."""
        return cells_to_json(
            self.settings, self.defenses, self.cells, [c.trial for c in self.cells]
        )

    @classmethod
    def from_json(cls, data: dict[str, Any], models: list[PlannedModel]) -> Plan:
        """The plan as stored: cells, settings and defences, no groups (nothing to run)."""
        settings = [Setting(**s) for s in data["settings"]]
        defenses, rows = cells_from_json(data, models)
        cells = [
            Cell(key, model, defenses[d], settings[s], trial) for key, model, d, s, trial in rows
        ]
        return cls(models, settings, defenses, [], cells)


class _StoredCell(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def model(self) -> PlannedModel: ...
    @property
    def defense(self) -> DefenseSetting: ...
    @property
    def setting(self) -> object: ...


def cells_to_json(
    settings: Sequence[object],
    defenses: list[DefenseSetting],
    cells: Sequence[_StoredCell],
    last: list[Any],
) -> dict[str, Any]:
    """Settings, defences and cells of a part's plan as JSON.

    ``last`` ends each cell's row: the trial of a degradation cell, the protocol of an attack
    cell.
    """
    setting_index = {id(s): i for i, s in enumerate(settings)}
    defense_index = {d.label: i for i, d in enumerate(defenses)}
    return {
        "settings": [vars(s) for s in settings],
        "defenses": [d.to_json() for d in defenses],
        "cells": [
            [c.key, c.model.id, defense_index[c.defense.label], setting_index[id(c.setting)], tail]
            for c, tail in zip(cells, last, strict=True)
        ],
    }


def cells_from_json(
    data: dict[str, Any], models: list[PlannedModel]
) -> tuple[list[DefenseSetting], list[tuple[str, PlannedModel, int, int, Any]]]:
    """The defences and the cell rows ``(key, model, defence index, setting index, last)``."""
    by_id = {m.id: m for m in models}
    defenses = [DefenseSetting.from_json(d, by_id) for d in data["defenses"]]
    rows = [(key, by_id[model], d, s, last) for key, model, d, s, last in data["cells"]]
    return defenses, rows


def _severity(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _composite_spec(m: ModelConfig) -> dict[str, Any]:
    """The ``composite`` of a planned composite model: its kind and what its outputs depend on."""
    if m.ensemble is not None:
        return {"kind": "ensemble", "combine": m.ensemble.combine}
    if m.master_slave is not None:
        decision = "switch" if m.master_slave.master is not None else "max_confidence"
        return {"kind": "master_slave", "decision": decision}
    if m.denoised is not None:
        denoised: dict[str, Any] = {"kind": "denoised", "head": m.denoised.head}
        if m.denoised.output != "fused":
            denoised["output"] = m.denoised.output
        return denoised
    spec = m.adaptive_filter
    assert spec is not None
    return {
        "kind": "adaptive_filter",
        "filters": None
        if spec.filters is None
        else {b: [d.name, dict(d.params)] for b, d in spec.filters.items()},
        "candidates": [[d.name, dict(d.params)] for d in spec.candidates],
        "holdout": spec.holdout,
    }


def _planned_models(
    m: ModelConfig,
    dataset: str,
    planned: dict[str, PlannedModel],
    roles: dict[str, list[tuple[str, str]]],
) -> list[PlannedModel]:
    """The study models of one entry; reads and hashes the files a user model comes from.

    ``planned`` holds the models planned so far by id; a model with a parent takes the
    parent's network (architecture and parameters) from there; a composite's parents are the
    models it is built from (``roles``: entry name -> ``(role, id)``, :func:`model_roles`).
    """
    if m.composite is not None:
        composite = _composite_spec(m)
        built_from = tuple((role, planned[pid]) for role, pid in roles[m.name])
        return [PlannedModel(m.name, m.name, None, parents=built_from, composite=composite)]
    mean = m.normalize.mean if m.normalize is not None else None
    std = m.normalize.std if m.normalize is not None else None
    if m.pretrained:
        source = ExternalSource.locate(
            torchscript=m.torchscript,
            factory=m.factory,
            factory_params=m.factory_params,
            weights=m.weights,
            mean=mean,
            std=std,
        )
        return [PlannedModel(id=m.name, name=m.name, recipe=None, source=source)]
    parents: tuple[tuple[str, PlannedModel], ...] = ()
    params: dict[str, Any]
    if m.parent is not None:
        parent = planned[m.parent]
        assert parent.recipe is not None and m.strategy is not None  # checked by the config
        role = m.strategy.parent_role
        assert role is not None
        parents = ((role, parent),)
        if m.strategy.parent_use == "frozen":  # a new network (a denoiser) depending on it
            assert m.architecture is not None
            architecture, params = m.architecture, m.params
        else:
            architecture, params = parent.recipe.architecture, parent.recipe.params
    elif m.factory is not None:
        # A user architecture trained by robustlab: the hash of its code joins the recipe, so
        # an edited architecture trains a new model instead of reusing a cached one.
        architecture = "external_factory"
        params = {
            "reference": m.factory,
            "params": m.factory_params,
            "mean": mean,
            "std": std,
            "code_digest": factory_code_digest(m.factory),
        }
    else:
        assert m.architecture is not None
        architecture, params = m.architecture, m.params
    return [
        PlannedModel(
            id=model_id,
            name=m.name,
            recipe=TrainingRecipe(
                architecture=architecture,
                params=params,
                dataset=dataset,
                epochs=epochs,
                batch_size=m.batch_size,
                learning_rate=m.learning_rate,
                optimizer=m.optimizer,
                seed=seed,
                weight_decay=m.weight_decay,
                betas=m.betas,
                strategy=m.strategy_name,
                strategy_params=m.strategy.params if m.strategy is not None else {},
                kind=TrainingRecipe.kind_of(m.strategy_name),  # type: ignore[arg-type]
            ),
            parents=parents,
        )
        for model_id, (epochs, seed, _) in zip(m.ids(), m.variants(), strict=True)
    ]


def plan_models(config: StudyConfig) -> list[PlannedModel]:
    """The study's models as an artefact graph, in an order where parents come first.

    Entries are taken in file order, except that an entry waits until its parent is planned
    (the config has already refused unknown parents and cycles).
    """
    planned: dict[str, PlannedModel] = {}
    ordered: list[PlannedModel] = []
    waiting = list(config.models)
    roles = {m.name: model_roles(m, config.models) for m in config.models}
    while waiting:
        ready = [m for m in waiting if all(i in planned for _, i in roles[m.name])]
        if not ready:  # pragma: no cover - the config validator refuses cycles
            raise ValueError(f"unresolvable parents: {[m.name for m in waiting]}")
        entry = ready[0]
        waiting.remove(entry)
        for model in _planned_models(entry, config.dataset.name, planned, roles):
            planned[model.id] = model
            ordered.append(model)
    return ordered


def defense_settings(config: StudyConfig) -> list[DefenseSetting]:
    """The study's defences, a trained denoiser's artefact and a loaded file's hash resolved.

    ``denoiser:model=<id>`` names a denoiser entry of the study (the config has checked it);
    its planned artefact comes from :func:`plan_models`. ``denoiser:path=<file>`` is keyed on
    the file's content, so replacing the file recomputes its cells.
    """
    needs_models = any(d.study_denoiser is not None for d in config.defenses)
    by_id = {m.id: m for m in plan_models(config)} if needs_models else {}
    settings = []
    for d in config.defenses:
        artefact = trained_for = digest = None
        if d.study_denoiser is not None:
            artefact = by_id[d.study_denoiser]
            trained_for = next((p.id for _, p in artefact.parents), None)
        elif d.name == "denoiser" and "path" in d.params:
            digest = file_digest(model_files(str(d.params["path"]))[0])
        settings.append(
            DefenseSetting(d.label, d.name, dict(d.params), artefact, trained_for, digest)
        )
    return settings


def make_plan(
    config: StudyConfig, data_fingerprint: str, models: list[PlannedModel] | None = None
) -> Plan:
    """Expand ``config`` into models, settings, defences, groups and cells.

    Args:
        config: the validated study.
        data_fingerprint: identifies the exact train and test data the cells are computed on.
        models: the study's planned models (:func:`plan_models`; planned here if None).

    Raises:
        ModelError: if a pretrained model's file is missing or its factory cannot be imported
            (their content hashes are part of the cell keys).
    """
    models = plan_models(config) if models is None else models
    settings: list[Setting] = []
    if config.include_clean:
        settings.append(Setting("clean", "none", {}, None, None, random=False))
    for d in config.degradations:
        swept = d.swept
        for params in d.settings():
            # Building the piece validates its parameters before any work starts, and tells
            # whether it is random (a composition is random only if one of its steps is).
            random = create_degradation(d.name, **params).random
            value = params.get(swept) if swept else None
            settings.append(Setting(d.label, d.name, params, swept, _severity(value), random))
    defenses = defense_settings(config)

    groups: list[Group] = []
    cells: list[Cell] = []
    scope = {"dataset": dataset_key(config.dataset), "data": data_fingerprint}
    for model in models:
        for setting in settings:
            for trial in range(config.trials if setting.random else 1):
                seed = derive_seed(config.seed, setting.name, setting.params, trial)
                group_cells = tuple(
                    Cell(
                        key=_digest(
                            {
                                **scope,
                                "model": model.key(),
                                "defense": d.key(),
                                "degradation": [setting.name, setting.params],
                                "trial": trial,
                                "seed": seed,
                                "copies": config.copies if setting.random else 1,
                            }
                        ),
                        model=model,
                        defense=d,
                        setting=setting,
                        trial=trial,
                    )
                    for d in defenses
                )
                copies = config.copies if setting.random else 1
                groups.append(Group(model, setting, trial, seed, group_cells, copies))
                cells.extend(group_cells)
    return Plan(models, settings, defenses, groups, cells)
