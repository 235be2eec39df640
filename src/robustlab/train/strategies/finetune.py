"""``finetune``: ghosh2018's data-augmentation fine-tuning of the last fully connected layers.

ghosh2018 (Section 5.2, Table 1, rows "DA, fc8", "fc67" and "fc678") compare their master-slave
network with data augmentation (DA): a pretrained VGG-16 whose last one, two or three fully
connected layers are fine-tuned on a mixed training set of clean and degraded images, the rest
of the network frozen. Here the parent model is the pretrained network, ``layers`` (1, 2 or 3)
counts its trained ``nn.Linear`` layers from the output backwards (in ``named_modules`` order),
and each batch of ``B`` clean images is trained together with ``B`` degraded copies of it
(``2B`` images per step), degraded at levels drawn per image from ``perturbation``.

Assumptions where the paper is silent:

- "fc67" is read as *two* layers, the last two (fc7 and fc8 of VGG-16): the paper says the
  improvement grows "as more fully connected layers (fc6, fc7 and fc8) are tuned", i.e. one,
  two, three layers; a literal fc6 + fc7 would leave the output layer untrained.
- "mixed training dataset of clean and degraded images" is one degraded copy per clean image
  in the same batch (``clean: false`` trains on the degraded copies alone).
- The whole network stays in eval mode except the trained ``nn.Linear`` layers, so batch-norm
  statistics and dropout do not move; this also switches off a dropout layer that lies
  *between* two trained layers (lin2022's dropout before its output layer when ``layers: 2``).
- ``trunk: trained`` departs from the paper (whose slave shares one fixed trunk) for users who
  want the branch's convolutions to adapt too: every parameter is trained, in training mode.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.models import create_model
    >>> from robustlab.train.strategy import StepContext
    >>> noise = {"degradation": "gaussian_noise", "levels": [0.1]}
    >>> strategy = Finetune(noise, layers=2)
    >>> net = strategy.adapt(create_model("lin2022_cnn"))
    >>> sum(p.numel() for p in strategy.trainable(net))  # fc 1764 -> 128 and fc 128 -> 10
    227210
    >>> tiny = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> context = StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=3)
    >>> _ = Finetune(noise).loss(tiny, torch.rand(5, 1, 2, 2), torch.arange(5) % 3, context)
    >>> context.images  # 5 clean images and their 5 degraded copies
    10
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.train.perturbation import perturbation_from
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy

#: What happens to the layers before the fine-tuned Linear layers.
TRUNKS = ("frozen", "trained")


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The qualified names and modules of ``model``'s ``nn.Linear`` layers, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


@STRATEGIES.register("finetune", tags=("ghosh2018", "parent"))
class Finetune(Strategy):
    """ghosh2018's DA: fine-tune a parent's last ``layers`` Linear layers on clean + degraded data.

    Args:
        perturbation: ``{degradation, levels, ...}`` the degraded copies are made with (see
            :class:`~robustlab.train.perturbation.Perturbation`).
        layers: how many of the parent's last ``nn.Linear`` layers are trained (ghosh2018:
            1 = fc8, 2 = fc67, 3 = fc678); the rest of the network is frozen.
        clean: train on each clean batch together with its degraded copies (``2B`` images per
            step); false trains on the degraded copies only (``B``).
        trunk: ``frozen`` (ghosh2018: the layers before the trained Linear layers keep the
            parent's weights, so every model fine-tuned from one parent shares them, and stay
            in eval mode) or ``trained`` (the whole network is fine-tuned in training mode:
            the trunk adapts to the degradation too, and is then the model's own).

    Raises:
        InvalidParameterError: for ``layers`` below 1, a non-boolean ``clean``, a ``trunk``
            other than ``frozen`` / ``trained`` or a bad ``perturbation``; at :meth:`adapt` /
            :meth:`trainable` time, for a model with fewer ``nn.Linear`` layers than
            ``layers``.
    """

    parent_role = "start"

    def __init__(
        self,
        perturbation: dict[str, Any],
        layers: int = 1,
        clean: bool = True,
        trunk: str = "frozen",
    ) -> None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise InvalidParameterError(
                f"finetune: layers must be a whole number >= 1 (ghosh2018: 1 = fc8, 2 = fc67, "
                f"3 = fc678), got {layers!r}"
            )
        if not isinstance(clean, bool):
            raise InvalidParameterError(f"finetune: clean must be true or false, got {clean!r}")
        if trunk not in TRUNKS:
            raise InvalidParameterError(
                f"finetune: trunk must be one of {', '.join(TRUNKS)}, got {trunk!r}"
            )
        found = perturbation_from(perturbation)
        if found is None:
            raise InvalidParameterError(
                "finetune: perturbation is required (the degradation of the training copies), "
                "e.g. {degradation: jpeg, levels: {low: 5, high: 20, integer: true}}"
            )
        self.perturbation = found
        self.layers = layers
        self.clean = clean
        self.trunk = trunk

    def _trained(self, model: nn.Module) -> list[nn.Linear]:
        found = linear_layers(model)
        if len(found) < self.layers:
            names = ", ".join(name for name, _ in found) or "none"
            raise InvalidParameterError(
                f"finetune: layers={self.layers} but {type(model).__name__} has only "
                f"{len(found)} nn.Linear layer(s) ({names}); set layers to at most "
                f"{len(found)}" + ("" if found else " (this network cannot be fine-tuned)")
            )
        return [module for _, module in found[-self.layers :]]

    def adapt(self, model: nn.Module) -> nn.Module:
        """The parent's network unchanged (checked to have ``layers`` Linear layers)."""
        self._trained(model)
        return model

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        """The last ``layers`` Linear layers' weights and biases (every one, trunk trained)."""
        head = [p for layer in self._trained(model) for p in layer.parameters()]
        if self.trunk == "frozen":
            return head
        chosen = {id(p) for p in head}
        return head + [p for p in model.parameters() if id(p) not in chosen]

    def train_mode(self, model: nn.Module) -> None:
        """Eval mode except the trained Linear layers (the whole network, trunk trained)."""
        layers = self._trained(model)
        if self.trunk == "trained":
            model.train()
            return
        model.eval()
        for layer in layers:
            layer.train()

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Mean cross-entropy over the clean batch and its degraded copies (``2B`` images)."""
        degraded = self.perturbation.apply(x, context.generator)
        if self.clean:
            return cross_entropy(model, torch.cat([x, degraded]), torch.cat([y, y]), context)
        return cross_entropy(model, degraded, y, context)
