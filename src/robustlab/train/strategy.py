"""The training-strategy contract and its registry.

A strategy turns one training batch into a loss. The training loop (:mod:`robustlab.train.loop`)
stays one loop: it shuffles, batches, calls :meth:`Strategy.loss` and steps the optimizer. What
differs between aghdam2016's noise augmentation, cavey's constant / incremental / transfer
learning, ghosh2018's fine-tuning and stability training and Madry et al.'s adversarial training
is only what the strategy does inside ``loss`` and, for strategies that start from a parent
model, how the parent's network is adapted (:meth:`Strategy.adapt`) and which of its parameters
are trained (:meth:`Strategy.trainable`).

Every random draw of a strategy comes from ``context.generator``, seeded from ``(recipe seed,
strategy name, epoch)``, so epoch ``e`` is the same whether training ran straight through or
resumed from a checkpoint. A strategy whose epoch ``e`` depends on the *total* number of epochs
(an incremental schedule) sets :attr:`Strategy.depends_on_total_epochs`; the model cache then
never continues a shorter training of it.

Registering a class in :data:`STRATEGIES` makes it usable from YAML (``strategy:`` of a model
entry), the CLI and Python at once; nothing in ``study/`` or ``report/`` names a strategy.

Example:
    >>> import torch
    >>> from torch import nn
    >>> strategy = create_strategy("standard")
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> context = StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=3)
    >>> loss = strategy.loss(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]), context)
    >>> loss.ndim, context.images
    (0, 2)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.base import SplitLike
from robustlab.models.base import check_logits
from robustlab.registry import Registry


@dataclass
class StepContext:
    """What a strategy may see besides the model and the batch.

    Attributes:
        epoch: the 0-based index of the running epoch.
        total_epochs: the number of epochs of the whole training.
        generator: the strategy's generator for this epoch (on the batch's device).
        num_classes: the number of classes (logits).
        images: images the model was trained on in this epoch so far; ``loss`` adds the images
            it feeds (the batch, plus any copies), so the model card can report images seen.
    """

    epoch: int
    total_epochs: int
    generator: torch.Generator
    num_classes: int
    images: int = 0


@dataclass
class FrozenParent:
    """The trained parent a strategy depends on without starting from it (a denoiser's classifier).

    Attributes:
        model: the parent in eval mode on the training device, its parameters frozen.
        key: the parent's cache key and epochs, ``<key>-e<epochs>`` (what derived artefacts,
            e.g. its adversarial examples, are keyed by).
        cache_root: the model cache's folder, where such derived artefacts are stored.
        data_fingerprint: the fingerprint of the training split.
        log: reports a line of progress (e.g. each strength of examples being generated).
    """

    model: nn.Module
    key: str
    cache_root: Path
    data_fingerprint: str
    log: Callable[[str], None] | None = None


class Strategy(ABC):
    """Base class of all training strategies.

    Attributes a strategy may override (as class attributes, or per instance in ``__init__``
    when a parameter decides, e.g. stability training from scratch or from a parent):

    - ``depends_on_total_epochs``: epoch ``e`` differs with the total number of epochs (e.g. an
      incremental schedule), so a longer training must not continue a cached shorter one.
    - ``parent_role``: the role of the parent model the strategy starts from (``"start"``), or
      None for a strategy that trains from scratch.
    - ``parent_use``: ``"start"`` (default): the trained network is a copy of the parent,
      adapted; ``"frozen"``: the network is built fresh from the entry's architecture and the
      parent is a frozen dependency handed to :meth:`prepare` (a denoiser's classifier).
    - ``version``: bump when a change to the strategy changes what it trains (cache keys).
    - ``kind``: what the trained artefact is. ``classifier`` (the default) answers the
      dataset's classes and is evaluated by every part of a study; ``quality`` (a quality
      network, :mod:`robustlab.train.strategies.quality`) answers other classes of its own
      (:meth:`outputs`) and is only used by the composites built on it, never scored as a
      classifier; ``denoiser`` (:mod:`robustlab.train.strategies.denoise`) maps images to
      images and is used in front of classifiers by the ``denoised`` composite.
    """

    depends_on_total_epochs: ClassVar[bool] = False
    parent_role: str | None = None
    parent_use: ClassVar[Literal["start", "frozen"]] = "start"
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "classifier"

    @abstractmethod
    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """The scalar training loss of the batch ``(x, y)`` (the model is in training mode).

        Must add the number of images it trained on to ``context.images``.
        """

    def adapt(self, model: nn.Module) -> nn.Module:
        """Change the parent's network before training (e.g. a new head); identity by default.

        Called on a copy of the trained parent when training starts, and on a freshly built
        network when a trained model is loaded from its card (the weights are then loaded over
        it), so it must change the structure deterministically. New layers draw their initial
        weights from the global generator, which the caller has forked and seeded.
        """
        return model

    def prepare(self, parent: FrozenParent | None, split: SplitLike) -> SplitLike:
        """The split to train on, given the frozen parent; ``split`` itself by default.

        Called once before training (also when training resumes from a checkpoint) by a
        strategy whose ``parent_use`` is ``"frozen"`` with its parent, by the others with
        None. A denoiser's strategy keeps the classifier here and returns its adversarial
        training examples.
        """
        return split

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the optimizer updates; the others are frozen. All by default."""
        return list(model.parameters())

    def outputs(self, num_classes: int) -> int:
        """How many logits the trained network has for a dataset of ``num_classes`` classes."""
        return num_classes

    def score(self, model: nn.Module, split: Any) -> float | None:
        """The accuracy the model card reports on ``split``; None: top-1 on its labels."""
        return None

    def train_mode(self, model: nn.Module) -> None:
        """Put ``model`` in training mode (frozen parts may stay in eval mode)."""
        model.train()

    def describe(self) -> str:
        """One line for reports: the strategy and its parameters."""
        params = getattr(self, "spec", None)
        return str(params) if params else type(self).__name__


STRATEGIES: Registry[Strategy] = Registry("strategy")


def create_strategy(name: str, **params: Any) -> Strategy:
    """Build the registered strategy ``name``; unknown names and parameters list valid ones."""
    load_builtin_strategies()
    return STRATEGIES.create(name, **params)


def strategy_entry(name: str) -> Any:
    """The registry entry of strategy ``name`` (registering the built-ins first)."""
    load_builtin_strategies()
    return STRATEGIES.entry(name)


def load_builtin_strategies() -> None:
    """Import every module of :mod:`robustlab.train.strategies`, registering its strategies.

    The package is scanned rather than listed, so a new strategy is one new file there.
    """
    import importlib
    import pkgutil

    import robustlab.train.strategies as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def cross_entropy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on ``(x, y)``, counting the images in ``context``.

    The first batch of an epoch checks the logits' shape, so a network that does not fit the
    data fails with the shapes rather than deep inside the loss.
    """
    logits = model(x)
    if context.images == 0:
        check_logits(logits, len(y), context.num_classes)
    context.images += len(y)
    return F.cross_entropy(logits, y)
