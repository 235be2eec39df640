"""The artefact graph of a study and the one place that provides its trained artefacts.

Everything robustlab trains is an *artefact*: a :class:`~robustlab.study.plan.PlannedModel`
with a recipe (kind, architecture, strategy and its parameters, data, seed, epochs) and
*parents*, the artefacts it starts from (a transfer model's base network). The plan holds them
as an explicit graph (:func:`artefact_graph`, parents first), which is what an executor walks
and what ``models.json`` and the report show.

:class:`ArtefactProvider.provide` is recursive and memoised: it loads a pretrained model, serves
a cached one, or trains it, providing its parents first only when training has to start from
them. Each artefact is therefore trained once per study (the memo) and once per cache (the
cache key hashes the recipe, the data fingerprint, the parents' keys and a code version); a
killed study resumes in the middle of the graph: cached parents are not retrained, and a child
killed mid-training continues from its last epoch.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [
    ...         {"name": "tl", "parent": "cnn-e2", "strategy": "transfer", "epochs": [1]},
    ...         {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [2]}]})
    >>> [(node.id, node.parents) for node in artefact_graph(plan_models(cfg))]
    [('cnn-e2', {}), ('tl-e1', {'start': 'cnn-e2'})]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustlab.data.base import Dataset
from robustlab.models.external import check_normalization_channels, probe_model
from robustlab.study.composites import CompositeContext, build_composite
from robustlab.study.plan import PlannedModel
from robustlab.study.progress import SilentProgress
from robustlab.study.store import ResultsStore
from robustlab.train.cache import ModelCache, ParentRef
from robustlab.train.loop import TrainingRecipe, build_model


@dataclass(frozen=True)
class ArtefactNode:
    """One node of the artefact graph, as stored and shown (no tensors, no user code)."""

    id: str
    kind: str
    architecture: str
    strategy: str
    epochs: int | None
    parents: dict[str, str] = field(default_factory=dict)  # role -> parent id

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "id": self.id,
            "kind": self.kind,
            "architecture": self.architecture,
            "strategy": self.strategy,
            "epochs": self.epochs,
            "parents": dict(self.parents),
        }


def with_ancestors(models: Iterable[PlannedModel]) -> list[PlannedModel]:
    """``models`` and every parent, each once, ordered so that parents come first."""
    ordered: list[PlannedModel] = []
    seen: set[str] = set()

    def visit(model: PlannedModel) -> None:
        if model.id in seen:
            return
        for _, parent in model.parents:
            visit(parent)
        seen.add(model.id)
        ordered.append(model)

    for model in models:
        visit(model)
    return ordered


def artefact_graph(models: Iterable[PlannedModel]) -> list[ArtefactNode]:
    """The graph of ``models`` (every parent included), ordered so that parents come first."""
    return [
        ArtefactNode(
            id=model.id,
            kind=(
                model.recipe.kind
                if model.recipe is not None
                else model.composite["kind"]
                if model.composite is not None
                else "classifier"
            ),
            architecture=model.architecture,
            strategy=model.strategy,
            epochs=model.epochs,
            parents=model.parent_ids,
        )
        for model in with_ancestors(models)
    ]


def _probe_untrained(
    recipe: TrainingRecipe, dataset: Dataset, device: torch.device, model_id: str
) -> None:
    mean = recipe.params.get("mean") if recipe.architecture == "external_factory" else None
    check_normalization_channels(mean, dataset.image_shape[0])
    probe_model(
        build_model(recipe).to(device),
        dataset.image_shape,
        recipe.build_strategy().outputs(dataset.num_classes),
        device,
        f"model {model_id} ({recipe.architecture})",
    )


class ArtefactProvider:
    """Provides a study's artefacts: loaded, served from the cache, or trained, once each.

    Args:
        dataset: the study's data (the train split trains, the test split scores).
        store: the results store, where every provided model is recorded.
        device: where models train and live.
        cache: the trained-model cache.
        progress: progress reporter for trainings.
    """

    def __init__(
        self,
        dataset: Dataset,
        store: ResultsStore,
        *,
        device: torch.device,
        cache: ModelCache,
        progress: SilentProgress | None = None,
    ) -> None:
        self.dataset = dataset
        self.store = store
        self.device = device
        self.cache = cache
        self.progress = progress or SilentProgress()
        self._models: dict[str, nn.Module] = {}
        self._keys: dict[str, str] = {}
        self.trained: list[str] = []  # ids trained (at least one epoch) by this provider

    def parent_refs(self, planned: PlannedModel) -> dict[str, ParentRef]:
        """Role -> reference (id, cache key, epochs) of each parent of ``planned``."""
        refs = {}
        for role, parent in planned.parents:
            assert parent.recipe is not None  # parents are trained models (config-checked)
            refs[role] = ParentRef(parent.id, self.cache_key(parent), parent.recipe.epochs)
        return refs

    def cache_key(self, planned: PlannedModel) -> str:
        """The cache key of a trained artefact (its parents' keys included), memoised."""
        if planned.id not in self._keys:
            assert planned.recipe is not None
            self._keys[planned.id] = self.cache.key(
                planned.recipe, self.dataset.train.fingerprint(), self.parent_refs(planned)
            )
        return self._keys[planned.id]

    def provide(self, planned: PlannedModel) -> nn.Module:
        """The artefact ``planned`` in eval mode on the provider's device.

        A pretrained model (TorchScript, or factory + weights) is loaded and probed with one
        batch of the dataset's image shape. A composite (ensemble, master-slave router,
        adaptive filter: :mod:`robustlab.study.composites`) is built from its parents, each
        provided once (shared with every other composite and cell that uses it). A model to
        train is served from the cache, else trained, its parents provided first when it
        starts from them; before training from scratch a fresh network is probed the same
        way, so an architecture that does not fit the data fails at once with the shapes.
        Every provided model is recorded in the store (with its parents: ``models.json``
        shows the graph).

        Raises:
            ModelError: if a user model cannot be loaded or a model does not fit the data.
        """
        if planned.id in self._models:
            return self._models[planned.id]
        dataset, store, device = self.dataset, self.store, self.device
        if planned.composite is not None:
            parts = {role: self.provide(parent) for role, parent in planned.parents}
            context = CompositeContext(dataset, device, dict(planned.parents))
            composite, card = build_composite(planned, parts, context)
            store.record_model(planned.id, "", card)
            self._models[planned.id] = composite
            return composite
        if planned.source is not None:
            model = planned.source.load(dataset.image_shape, dataset.num_classes, device)
            store.record_model(planned.id, planned.source.path, planned.source.card())
            self._models[planned.id] = model
            return model
        recipe = planned.recipe
        assert recipe is not None
        parents = self.parent_refs(planned)
        if not planned.parents and self.cache.lookup(recipe, dataset.train.fingerprint()) is None:
            _probe_untrained(recipe, dataset, device, planned.id)
        task = [-1]

        def on_start(_: object, first: int, last: int) -> None:
            if last > first:
                images = len(dataset.train) * (last - first)
                origin = f" from {', '.join(p.id for p in parents.values())}" if parents else ""
                task[0] = self.progress.start(
                    f"training {planned.id}{origin} (ep {first}->{last})", images
                )

        def on_batch(n: int) -> None:
            self.progress.advance(task[0], n)

        def start() -> nn.Module:
            (_, parent), *_ = planned.parents
            return self.provide(parent)

        served = self.cache.get_or_train(
            recipe,
            dataset,
            device,
            parents=parents,
            start=start if planned.parents else None,
            on_start=on_start,
            on_batch=on_batch,
            on_log=self.progress.log,
        )
        if served.trained_epochs:
            self.trained.append(planned.id)
            self.progress.finish(task[0])
            self.progress.log(
                f"trained {planned.id} ({planned.strategy}): "
                f"{'bin' if recipe.kind == 'quality' else 'clean'} accuracy "
                f"{served.card.clean_accuracy:.4f} in {served.card.train_seconds:.1f} s"
            )
        card = served.card.model_dump()
        store.record_model(planned.id, str(served.path), card)
        model = served.model.to(device).eval()
        self._models[planned.id] = model
        return model
