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
    >>> train_epochs(model, optimizer, split, recipe, start_epoch=0, end_epoch=1)  # images seen
    20
    >>> evaluate_accuracy(model, split) <= 1.0
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from robustlab.data.base import SplitLike
from robustlab.errors import InvalidParameterError
from robustlab.models.base import MODELS, create_model
from robustlab.seeding import derive_seed, make_generator
from robustlab.train.strategy import StepContext, Strategy, create_strategy, strategy_entry

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
    betas: tuple[float, float] | None = Field(
        None, description="Adam's (beta1, beta2); PyTorch's (0.9, 0.999) when None"
    )
    strategy: str = "standard"
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    kind: Literal["classifier", "quality", "denoiser"] = Field(
        "classifier", description="what is trained: a classifier, a quality network or a denoiser"
    )

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, name: str) -> str:
        MODELS.entry(name)
        return name

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        strategy_entry(name)
        return name

    @model_validator(mode="after")
    def _kind_of_strategy(self) -> TrainingRecipe:
        expected = self.kind_of(self.strategy)
        if self.kind != expected:
            raise InvalidParameterError(
                f"strategy '{self.strategy}' trains a {expected}, but the recipe says {self.kind}"
            )
        return self

    @field_validator("betas")
    @classmethod
    def _valid_betas(cls, betas: tuple[float, float] | None) -> tuple[float, float] | None:
        if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
            raise InvalidParameterError(f"Adam betas must be in [0, 1), got {list(betas)}")
        return betas

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields added after the first release are left out at their defaults, so a recipe
        # that uses none of them dumps (and hashes: cache and cell keys) exactly as before.
        data: dict[str, Any] = handler(self)
        for name, default in _LATER_FIELDS.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    @classmethod
    def kind_of(cls, strategy: str) -> str:
        """The kind of artefact ``strategy`` trains (``classifier``, ``quality``, ``denoiser``)."""
        return str(getattr(strategy_entry(strategy).factory, "kind", "classifier"))

    def build_strategy(self) -> Strategy:
        """The strategy object of this recipe."""
        return create_strategy(self.strategy, **self.strategy_params)

    def lineage(self) -> dict[str, Any]:
        """The recipe less ``epochs``: trainings of one lineage continue each other.

        A strategy whose epoch ``e`` depends on the total number of epochs keeps them: then
        every length is a lineage of its own.
        """
        if self.build_strategy().depends_on_total_epochs:
            return self.model_dump()
        return self.model_dump(exclude={"epochs"})


_LATER_FIELDS: dict[str, Any] = {
    "betas": None,
    "strategy": "standard",
    "strategy_params": {},
    "kind": "classifier",
}


def build_model(recipe: TrainingRecipe, start: nn.Module | None = None) -> nn.Module:
    """The model of ``recipe`` before training, initialised from generators seeded by it.

    Args:
        recipe: what to build.
        start: the trained parent a strategy with a parent starts from (copied, not changed).
            Without it the architecture is built fresh, which is also how a trained model of
            such a strategy is rebuilt before its saved weights are loaded over it. A strategy
            that only depends on its parent (``parent_use: frozen``) never starts from it.
    """
    strategy = recipe.build_strategy()
    # Layer constructors draw from the global generator; fork it so the caller's state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(recipe.seed, "init"))
        model = (
            copy.deepcopy(start).cpu()
            if start is not None and strategy.parent_use == "start"
            else create_model(recipe.architecture, **recipe.params)
        )
        if recipe.strategy != "standard":
            torch.manual_seed(derive_seed(recipe.seed, "adapt", recipe.strategy))
            model = strategy.adapt(model)
    return model


def make_optimizer(
    recipe: TrainingRecipe, model: nn.Module, strategy: Strategy | None = None
) -> torch.optim.Optimizer:
    """The optimizer the recipe names, over the parameters ``strategy`` trains (default all)."""
    strategy = strategy or recipe.build_strategy()
    trainable = strategy.trainable(model)
    chosen = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    if recipe.optimizer == "adam":
        betas = recipe.betas if recipe.betas is not None else (0.9, 0.999)
        return torch.optim.Adam(
            trainable, lr=recipe.learning_rate, weight_decay=recipe.weight_decay, betas=betas
        )
    return torch.optim.SGD(
        trainable,
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
    num_classes: int | None = None,
    strategy: Strategy | None = None,
) -> int:
    """Train ``model`` in place from epoch ``start_epoch`` up to (excluding) ``end_epoch``.

    Every batch goes through the recipe's strategy, which turns it into a loss; epoch ``e``
    draws its shuffle, dropout masks and strategy randomness from generators seeded by
    ``(seed, e)``, so the epochs are the same whether run straight through or resumed.

    Args:
        model: the model, on the device to train on.
        optimizer: its optimizer, possibly restored from a checkpoint.
        split: training images and labels (in memory or streamed from disk).
        recipe: batch size, seed, strategy and total epochs.
        start_epoch: index of the first epoch to run (0-based).
        end_epoch: number of epochs completed when this returns.
        on_epoch_end: called as ``(epochs_done, model, optimizer)`` after each epoch.
        on_batch: called with the batch size after each optimisation step (progress bars).
        num_classes: the number of classes (inferred from the model's first output if None).
        strategy: the strategy object (built from the recipe if None).

    Returns:
        The number of images the model was trained on (copies and adversarial examples count).
    """
    device = _device_of(model)
    strategy = strategy or recipe.build_strategy()
    if num_classes is None:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            probe = next(iter(split.batches(1, device)))[0]
            num_classes = int(model(probe).shape[-1])
    seen = 0
    for epoch in range(start_epoch, end_epoch):
        strategy.train_mode(model)
        order = torch.randperm(
            len(split), generator=make_generator(derive_seed(recipe.seed, "shuffle", epoch))
        )
        context = StepContext(
            epoch=epoch,
            total_epochs=recipe.epochs,
            generator=make_generator(
                derive_seed(recipe.seed, "strategy", recipe.strategy, epoch), device
            ),
            num_classes=num_classes,
        )
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(recipe.seed, "dropout", epoch))
            for x, y in split.batches(recipe.batch_size, device, order=order):
                loss = strategy.loss(model, x, y, context)
                if not torch.isfinite(loss):
                    raise InvalidParameterError(
                        f"training diverged: the {recipe.strategy} loss is {float(loss)} in "
                        f"epoch {epoch + 1}; lower the learning rate ({recipe.learning_rate:g})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                if on_batch is not None:
                    on_batch(len(y))
        seen += context.images
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model, optimizer)
    model.eval()
    return seen


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, split: SplitLike, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (eval mode)."""
    model.eval()
    device = _device_of(model)
    correct = 0
    for x, y in split.batches(batch_size, device):
        correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / max(len(split), 1)
