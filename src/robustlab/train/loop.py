"""The supervised training loop, deterministic and resumable epoch by epoch.

Epoch ``e`` shuffles with a generator seeded from ``(seed, "shuffle", e)`` and draws dropout
masks from ``(seed, "dropout", e)``. Training for 20 epochs is therefore bit-for-bit the same
as training for 10, saving model and optimizer state, and continuing for 10 more: the model
cache exploits this to serve 10-, 20- and 30-epoch models from one 30-epoch run. Batches come
from ``split.batches(..., order=permutation)``, so a split streamed from disk
(:class:`~robustlab.data.streaming.StreamingSplit`) trains exactly like one in memory.

Example:
    >>> import torch
    >>> from robustlab.data.base import Split
    >>> pixels = torch.randint(0, 255, (20, 1, 28, 28), dtype=torch.uint8)
    >>> split = Split(pixels, torch.arange(20) % 10)
    >>> recipe = TrainingRecipe(architecture="lin2022_cnn", dataset="toy", epochs=1, batch_size=10)
    >>> model = build_model(recipe)
    >>> optimizer = make_optimizer(recipe, model)
    >>> train_epochs(model, optimizer, split, recipe, start_epoch=0, end_epoch=1)
    >>> evaluate_accuracy(model, split) <= 1.0
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from robustlab.data.base import SplitLike
from robustlab.models.base import MODELS, check_logits, create_model
from robustlab.seeding import derive_seed, make_generator

EpochCallback = Callable[[int, nn.Module, torch.optim.Optimizer], None]
BatchCallback = Callable[[int], None]


class TrainingRecipe(BaseModel):
    """Everything that determines a trained model (besides the data itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(100, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, name: str) -> str:
        MODELS.entry(name)
        return name

    def lineage(self) -> dict[str, Any]:
        """The recipe without ``epochs``: models of one lineage continue each other."""
        return self.model_dump(exclude={"epochs"})


def build_model(recipe: TrainingRecipe) -> nn.Module:
    """The untrained model of ``recipe``, initialised from a generator seeded by the recipe."""
    # Layer constructors draw from the global generator; fork it so the caller's state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(recipe.seed, "init"))
        return create_model(recipe.architecture, **recipe.params)


def make_optimizer(recipe: TrainingRecipe, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer the recipe names, over ``model``'s parameters."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.learning_rate,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: SplitLike,
    recipe: TrainingRecipe,
    *,
    start_epoch: int,
    end_epoch: int,
    on_epoch_end: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> None:
    """Train ``model`` in place from epoch ``start_epoch`` up to (excluding) ``end_epoch``.

    Args:
        model: the model, on the device to train on.
        optimizer: its optimizer, possibly restored from a checkpoint.
        split: training images and labels (in memory or streamed from disk).
        recipe: batch size and seed.
        start_epoch: index of the first epoch to run (0-based).
        end_epoch: number of epochs completed when this returns.
        on_epoch_end: called as ``(epochs_done, model, optimizer)`` after each epoch.
        on_batch: called with the batch size after each optimisation step (progress bars).
    """
    device = _device_of(model)
    num_classes = None
    for epoch in range(start_epoch, end_epoch):
        model.train()
        order = torch.randperm(
            len(split), generator=make_generator(derive_seed(recipe.seed, "shuffle", epoch))
        )
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(recipe.seed, "dropout", epoch))
            for x, y in split.batches(recipe.batch_size, device, order=order):
                logits = model(x)
                if num_classes is None:
                    num_classes = logits.shape[-1]
                    check_logits(logits, len(y), num_classes)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                if on_batch is not None:
                    on_batch(len(y))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model, optimizer)
    model.eval()


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, split: SplitLike, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (eval mode)."""
    model.eval()
    device = _device_of(model)
    correct = 0
    for x, y in split.batches(batch_size, device):
        correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / max(len(split), 1)
