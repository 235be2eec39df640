"""The trained-model cache: one training serves every study that needs the same model.

Models are keyed by a hash of their :meth:`TrainingRecipe.lineage` (architecture, parameters,
optimizer, learning rate, batch size, seed) and the fingerprint of the training data. Epochs are
not part of the key: under ``<cache>/<key>/`` live ``epoch-NNNN.safetensors`` + ``.json`` card
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustlab import __version__
from robustlab.data.base import Dataset
from robustlab.models.store import ModelCard, load_model, read_card, save_model
from robustlab.paths import model_cache_dir
from robustlab.train.checkpoint import checkpoint_epoch, load_checkpoint, save_checkpoint
from robustlab.train.loop import (
    BatchCallback,
    TrainingRecipe,
    build_model,
    evaluate_accuracy,
    make_optimizer,
    train_epochs,
)

# Bump when a change to the training loop changes what a recipe produces.
TRAINING_CODE_VERSION = 1

StartCallback = Callable[[TrainingRecipe, int, int], None]


@dataclass
class CachedModel:
    """A model served by the cache."""

    model: nn.Module
    card: ModelCard
    path: Path
    trained_epochs: int  # epochs trained by this call (0 when fully served from the cache)


class ModelCache:
    """A folder of trained models keyed by everything that determines them.

    Args:
        root: the cache folder; defaults to ``$ROBUSTLAB_CACHE`` or the user cache.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else model_cache_dir()

    def key(self, recipe: TrainingRecipe, data_fingerprint: str) -> str:
        """The cache key of ``recipe`` trained on data with ``data_fingerprint``."""
        blob = json.dumps(
            {
                "recipe": recipe.lineage(),
                "data": data_fingerprint,
                "code": TRAINING_CODE_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def folder(self, recipe: TrainingRecipe, data_fingerprint: str) -> Path:
        """The folder holding every length of ``recipe``'s lineage."""
        return self.root / self.key(recipe, data_fingerprint)

    @staticmethod
    def _stem(epochs: int) -> str:
        return f"epoch-{epochs:04d}"

    def lookup(self, recipe: TrainingRecipe, data_fingerprint: str) -> Path | None:
        """The weights path of a finished model for ``recipe``, or None."""
        weights = self.folder(recipe, data_fingerprint) / f"{self._stem(recipe.epochs)}.safetensors"
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
        on_start: StartCallback | None = None,
        on_batch: BatchCallback | None = None,
    ) -> CachedModel:
        """Return the trained model of ``recipe``, training only the epochs not yet cached.

        Args:
            recipe: what to train.
            dataset: the data (its train split trains, its test split gives the clean accuracy).
            device: where to train and where the returned model lives.
            on_start: called as ``(recipe, first_epoch, last_epoch)`` before any training.
            on_batch: called with the batch size after every step (progress bars).
        """
        fingerprint = dataset.train.fingerprint()
        folder = self.folder(recipe, fingerprint)
        found = self.lookup(recipe, fingerprint)
        if found is not None:
            return CachedModel(load_model(found, str(device)), read_card(found), found, 0)

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "recipe.json").write_text(
            json.dumps({"recipe": recipe.lineage(), "data": fingerprint}, indent=2)
        )
        model = build_model(recipe).to(device)
        optimizer = make_optimizer(recipe, model)
        start = 0
        state = self._best_start(folder, recipe.epochs)
        if state is not None:
            start = load_checkpoint(state, model, optimizer)

        def checkpoint(done: int, net: nn.Module, opt: torch.optim.Optimizer) -> None:
            save_checkpoint(folder / "latest.state.safetensors", net, opt, done)

        if on_start is not None:
            on_start(recipe, start, recipe.epochs)
        began = time.perf_counter()
        train_epochs(
            model,
            optimizer,
            dataset.train,
            recipe,
            start_epoch=start,
            end_epoch=recipe.epochs,
            on_epoch_end=checkpoint,
            on_batch=on_batch,
        )
        seconds = time.perf_counter() - began
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
            clean_accuracy=evaluate_accuracy(model, dataset.test),
            test_size=len(dataset.test),
            train_seconds=round(seconds, 3),
            cache_key=folder.name,
            robustlab_version=__version__,
        )
        stem = folder / self._stem(recipe.epochs)
        save_checkpoint(stem.with_suffix(".state.safetensors"), model, optimizer, recipe.epochs)
        path = save_model(model, card, stem)
        return CachedModel(model.eval(), card, path, recipe.epochs - start)
