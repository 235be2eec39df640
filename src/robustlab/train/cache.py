"""The trained-model cache: one training serves every study that needs the same model.

Models are keyed by a hash of their :meth:`TrainingRecipe.lineage` (architecture, parameters,
optimizer, learning rate, batch size, seed, strategy), the fingerprint of the training data, a
training-code version and, for a model that starts from another, its parents' keys and epochs
(:class:`ParentRef`): a change anywhere upstream retrains exactly what depends on it. A recipe
with the standard strategy and no parent hashes exactly as before strategies existed, so older
caches stay valid. Epochs are not part of the key (unless the strategy's schedule depends on
the total, :attr:`~robustlab.train.strategy.Strategy.depends_on_total_epochs`): under
``<cache>/<key>/`` live ``epoch-NNNN.safetensors`` + ``.json`` card
for every length trained so far, a continuation state for each, and a rolling ``latest`` state
written after every epoch. Asking for 30 epochs when 10 are cached trains 20 more; a training
killed at epoch 17 restarts from epoch 17. The result is bit-for-bit the same on CPU either way
(see :mod:`robustlab.train.loop`).

Example:
    >>> import tempfile, torch
    >>> from robustlab.data.base import Dataset, Split
    >>> pixels = torch.randint(0, 255, (20, 1, 28, 28), dtype=torch.uint8)
    >>> split = Split(pixels, torch.arange(20) % 10)
    >>> data = Dataset("toy", split, split, [str(i) for i in range(10)])
    >>> cache = ModelCache(tempfile.mkdtemp())
    >>> recipe = TrainingRecipe(architecture="lin2022_cnn", dataset="toy", epochs=1, batch_size=10)
    >>> first = cache.get_or_train(recipe, data)
    >>> second = cache.get_or_train(recipe, data)
    >>> first.trained_epochs, second.trained_epochs, first.path == second.path
    (1, 0, True)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustlab import __version__
from robustlab.data.base import Dataset, SplitLike
from robustlab.errors import ModelError
from robustlab.locks import exclusive
from robustlab.models.store import ModelCard, load_model, read_card, save_model
from robustlab.paths import model_cache_dir
from robustlab.train.checkpoint import (
    checkpoint_epoch,
    checkpoint_extra,
    load_checkpoint,
    save_checkpoint,
)
from robustlab.train.loop import (
    BatchCallback,
    TrainingRecipe,
    build_model,
    evaluate_accuracy,
    make_optimizer,
    train_epochs,
)
from robustlab.train.strategy import FrozenParent, Strategy

# Bump when a change to the training loop changes what a recipe produces.
TRAINING_CODE_VERSION = 1

StartCallback = Callable[[TrainingRecipe, int, int], None]


def _score(strategy: Strategy, model: nn.Module, split: SplitLike) -> float:
    """The card's accuracy on ``split``: the strategy's own score, else top-1 on the labels."""
    score = strategy.score(model, split)
    return evaluate_accuracy(model, split) if score is None else score


@dataclass(frozen=True)
class ParentRef:
    """A parent a model starts from: its study id, cache key and trained epochs."""

    id: str
    key: str
    epochs: int

    def for_key(self) -> list[str | int]:
        """What of the parent enters the child's key (the id does not: it is only a name)."""
        return [self.key, self.epochs]


@dataclass
class CachedModel:
    """A model served by the cache."""

    model: nn.Module
    card: ModelCard
    path: Path
    trained_epochs: int  # epochs trained by this call (0 when fully served from the cache)
    parents_used: list[str] = field(default_factory=list)  # parent ids this call had to load


class ModelCache:
    """A folder of trained models keyed by everything that determines them.

    Args:
        root: the cache folder; defaults to ``$ROBUSTLAB_CACHE`` or the user cache.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else model_cache_dir()

    def key(
        self,
        recipe: TrainingRecipe,
        data_fingerprint: str,
        parents: Mapping[str, ParentRef] | None = None,
    ) -> str:
        """The cache key of ``recipe`` trained on data with ``data_fingerprint``.

        Args:
            recipe: what is trained.
            data_fingerprint: the training split's fingerprint.
            parents: role -> the parent each role names (none for a model trained from scratch).
        """
        payload: dict[str, object] = {
            "recipe": recipe.lineage(),
            "data": data_fingerprint,
            "code": TRAINING_CODE_VERSION,
        }
        if recipe.strategy != "standard":
            payload["strategy_code"] = recipe.build_strategy().version
        if parents:
            payload["parents"] = {role: ref.for_key() for role, ref in sorted(parents.items())}
        blob = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def folder(
        self,
        recipe: TrainingRecipe,
        data_fingerprint: str,
        parents: Mapping[str, ParentRef] | None = None,
    ) -> Path:
        """The folder holding every length of ``recipe``'s lineage."""
        return self.root / self.key(recipe, data_fingerprint, parents)

    @staticmethod
    def _stem(epochs: int) -> str:
        return f"epoch-{epochs:04d}"

    def lookup(
        self,
        recipe: TrainingRecipe,
        data_fingerprint: str,
        parents: Mapping[str, ParentRef] | None = None,
    ) -> Path | None:
        """The weights path of a finished model for ``recipe``, or None."""
        folder = self.folder(recipe, data_fingerprint, parents)
        weights = folder / f"{self._stem(recipe.epochs)}.safetensors"
        card = weights.with_suffix(".json")
        return weights if weights.exists() and card.exists() else None

    def _best_start(self, folder: Path, epochs: int) -> Path | None:
        best: tuple[int, Path] | None = None
        for state in folder.glob("*.state.safetensors"):
            try:
                done = checkpoint_epoch(state)
            except Exception:  # a damaged checkpoint is simply not a starting point
                continue
            if done <= epochs and (best is None or done > best[0]):
                best = (done, state)
        return best[1] if best else None

    def get_or_train(
        self,
        recipe: TrainingRecipe,
        dataset: Dataset,
        device: torch.device | str = "cpu",
        *,
        parents: Mapping[str, ParentRef] | None = None,
        start: Callable[[], nn.Module] | None = None,
        on_start: StartCallback | None = None,
        on_batch: BatchCallback | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> CachedModel:
        """Return the trained model of ``recipe``, training only the epochs not yet cached.

        Args:
            recipe: what to train.
            dataset: the data (its train split trains, its test split gives the clean accuracy).
            device: where to train and where the returned model lives.
            parents: role -> parent reference, for a strategy that starts from another model.
            start: returns the trained parent model; called only when training must start
                from the parent (not when the model is cached or resumes from a checkpoint).
            on_start: called as ``(recipe, first_epoch, last_epoch)`` before any training.
            on_batch: called with the batch size after every step (progress bars).
            on_log: reports a line of progress while a strategy prepares its data.

        Raises:
            ModelError: if the strategy needs a parent and none is given.
        """
        fingerprint = dataset.train.fingerprint()
        folder = self.folder(recipe, fingerprint, parents)
        found = self.lookup(recipe, fingerprint, parents)
        if found is not None:
            return CachedModel(load_model(found, str(device)), read_card(found), found, 0)
        # One trainer per entry: a second process (a Ray worker, another study) asking for the
        # same model waits here, then finds it cached.
        with exclusive(folder / ".lock"):
            found = self.lookup(recipe, fingerprint, parents)
            if found is not None:
                return CachedModel(load_model(found, str(device)), read_card(found), found, 0)
            return self._train(
                recipe, dataset, device, folder, parents, start, on_start, on_batch, on_log
            )

    def _train(
        self,
        recipe: TrainingRecipe,
        dataset: Dataset,
        device: torch.device | str,
        folder: Path,
        parents: Mapping[str, ParentRef] | None,
        start: Callable[[], nn.Module] | None,
        on_start: StartCallback | None,
        on_batch: BatchCallback | None,
        on_log: Callable[[str], None] | None,
    ) -> CachedModel:
        fingerprint = dataset.train.fingerprint()
        strategy = recipe.build_strategy()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "recipe.json").write_text(
            json.dumps(
                {
                    "recipe": recipe.lineage(),
                    "data": fingerprint,
                    "parents": {r: vars(p) for r, p in (parents or {}).items()},
                },
                indent=2,
            )
        )
        state = self._best_start(folder, recipe.epochs)
        used: list[str] = []
        parent_model = None
        # A parent the network starts from is needed only before the first epoch; a frozen
        # parent (a denoiser's classifier) whenever anything is trained or scored.
        frozen = strategy.parent_use == "frozen"
        if strategy.parent_role is not None and (state is None or frozen):
            if start is None or not parents or strategy.parent_role not in parents:
                raise ModelError(
                    f"strategy '{recipe.strategy}' needs a parent model; give the model "
                    f"entry a parent (parent: <model id>)"
                )
            parent_model = start()
            used.append(parents[strategy.parent_role].id)
        frozen_parent = None
        if frozen:
            assert parent_model is not None and parents is not None
            for p in parent_model.parameters():
                p.requires_grad_(False)
            frozen_parent = FrozenParent(
                parent_model.eval(),
                # The parent's cache key leaves out its epochs (a lineage); derived artefacts
                # (a denoiser's adversarial examples) must tell 3 epochs from 10.
                "{}-e{}".format(*parents[str(strategy.parent_role)].for_key()),
                self.root,
                fingerprint,
                on_log,
            )
        split = strategy.prepare(frozen_parent, dataset.train)
        model = build_model(recipe, start=parent_model).to(device)
        optimizer = make_optimizer(recipe, model, strategy)
        begun = 0
        totals = {"images_seen": 0.0, "train_seconds": 0.0}
        if state is not None:
            begun = load_checkpoint(state, model, optimizer)
            totals.update(checkpoint_extra(state))
        began = time.perf_counter()
        seen = 0
        if on_start is not None:
            on_start(recipe, begun, recipe.epochs)
        for epoch in range(begun, recipe.epochs):
            seen += train_epochs(
                model,
                optimizer,
                split,
                recipe,
                start_epoch=epoch,
                end_epoch=epoch + 1,
                on_batch=on_batch,
                num_classes=strategy.outputs(dataset.num_classes),
                strategy=strategy,
            )
            running = {
                "images_seen": totals["images_seen"] + seen,
                "train_seconds": totals["train_seconds"] + time.perf_counter() - began,
            }
            save_checkpoint(
                folder / "latest.state.safetensors", model, optimizer, epoch + 1, running
            )
        seconds = totals["train_seconds"] + time.perf_counter() - began
        images = int(totals["images_seen"]) + seen
        card = ModelCard(
            architecture=recipe.architecture,
            params=recipe.params,
            dataset=recipe.dataset,
            dataset_fingerprint=fingerprint,
            train_size=len(dataset.train),
            seed=recipe.seed,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            optimizer=recipe.optimizer,
            clean_accuracy=_score(strategy, model, dataset.test),
            test_size=len(dataset.test),
            train_seconds=round(seconds, 3),
            cache_key=folder.name,
            robustlab_version=__version__,
            strategy=recipe.strategy,
            strategy_params=recipe.strategy_params,
            parents={r: vars(p) for r, p in (parents or {}).items()},
            betas=list(recipe.betas) if recipe.betas is not None else None,
            train_accuracy=_score(strategy, model, dataset.train),
            images_seen=images,
        )
        stem = folder / self._stem(recipe.epochs)
        save_checkpoint(
            stem.with_suffix(".state.safetensors"),
            model,
            optimizer,
            recipe.epochs,
            {"images_seen": float(images), "train_seconds": seconds},
        )
        path = save_model(model, card, stem)
        return CachedModel(model.eval(), card, path, recipe.epochs - begun, used)
