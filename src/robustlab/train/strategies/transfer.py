"""``transfer``: cavey's transfer learning (Section VI-C) from a parent model.

The parent's output layer (its last ``nn.Linear``) is replaced by new fully connected layers
(``hidden``; cavey: 256 + ReLU on MNIST, 256 and 512 + ReLU on CIFAR-10) ending in a fresh
output layer, and the network is fine-tuned on perturbed images, either whole
(``train: all``) or only the new head (``train: head``, the parent's layers frozen and kept in
eval mode so their batch-norm statistics and dropout do not move). ``share`` of each batch is
perturbed (all of it by default), at levels drawn per image from ``perturbation``.

Example:
    >>> import torch
    >>> from robustlab.models import create_model
    >>> strategy = Transfer(hidden=[256], train="head")
    >>> net = strategy.adapt(create_model("lin2022_cnn"))
    >>> net.classifier[-1]
    Sequential(
      (0): Linear(in_features=128, out_features=256, bias=True)
      (1): ReLU()
      (2): Linear(in_features=256, out_features=10, bias=True)
    )
    >>> sum(p.numel() for p in strategy.trainable(net))
    35594
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from robustlab.errors import InvalidParameterError, ModelError
from robustlab.train.perturbation import perturb_share, perturbation_from
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy


def output_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The qualified name and module of ``model``'s last ``nn.Linear`` (its output layer)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no nn.Linear layer; transfer replaces the last one"
        )
    return found[-1]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted path) of ``model`` is."""
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, attribute, new)


@STRATEGIES.register("transfer", tags=("cavey", "parent"))
class Transfer(Strategy):
    """cavey's transfer learning: a new FC head on a parent model, fine-tuned on perturbed data.

    Args:
        hidden: widths of the new hidden fully connected layers (each followed by ReLU).
        train: ``all`` fine-tunes the whole network, ``head`` only the new layers.
        perturbation: ``{degradation, levels, ...}`` the training images are perturbed with
            (see :class:`~robustlab.train.perturbation.Perturbation`); None for clean images.
        share: fraction of each batch that is perturbed.
    """

    parent_role = "start"

    def __init__(
        self,
        hidden: list[int] | None = None,
        train: Literal["all", "head"] = "all",
        perturbation: dict[str, Any] | None = None,
        share: float = 1.0,
    ) -> None:
        self.hidden = [256] if hidden is None else [int(h) for h in hidden]
        if any(h < 1 for h in self.hidden):
            raise InvalidParameterError(f"transfer: hidden widths must be >= 1, got {hidden}")
        if train not in ("all", "head"):
            raise InvalidParameterError(f"transfer: train must be 'all' or 'head', got {train!r}")
        if not 0.0 <= share <= 1.0:
            raise InvalidParameterError(f"transfer: share must be in [0, 1], got {share}")
        self.train = train
        self.share = float(share)
        self.perturbation = perturbation_from(perturbation)

    def adapt(self, model: nn.Module) -> nn.Module:
        """Replace the output layer by ``hidden`` ReLU layers and a new output layer."""
        name, old = output_layer(model)
        layers: list[nn.Module] = []
        width = old.in_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, old.out_features))
        replace_module(model, name, nn.Sequential(*layers))
        return model

    def _head(self, model: nn.Module) -> nn.Module:
        name, _ = output_layer(model)
        # The output layer is the last of the new head: its owner is the head.
        return model.get_submodule(name.rpartition(".")[0])

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        """Every parameter (``train: all``) or those of the new head (``train: head``)."""
        if self.train == "all":
            return list(model.parameters())
        return list(self._head(model).parameters())

    def train_mode(self, model: nn.Module) -> None:
        """Training mode for what is trained; frozen layers stay in eval mode."""
        if self.train == "all":
            model.train()
        else:
            model.eval()
            self._head(model).train()

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Cross-entropy on the batch with ``share`` of it perturbed."""
        if self.perturbation is not None and self.share > 0:
            x = perturb_share(x, self.share, self.perturbation, context.generator)
        return cross_entropy(model, x, y, context)
