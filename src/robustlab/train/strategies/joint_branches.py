"""``joint_branches``: ghosh2018's slave trained as one network, its trunk shared by the branches.

ghosh2018 (Section 4.1) build the slave from "a common trunk" and one branch per quality bin,
"each branch trained using the cross-entropy loss function" on its bin's images; branch 1
keeps the pretrained weights. With separate ``finetune`` children of one parent (the paper
config's branches) the trunk is shared only because it is frozen. This strategy makes the
shared trunk explicit and lets it train: it turns the parent into a
:class:`~robustlab.models.shared_trunk.SharedTrunkBranches` network (one head per bin, every
head a copy of the parent's last ``layers`` Linear layers) and trains it on the parent's
training images, each put into a bin drawn uniformly (:class:`~robustlab.train.bins.
DegradationBins`, the same bins a master is trained on), each image scored by the branch of
its bin only. So branch ``k``'s head learns from bin ``k``'s images alone and the trunk from
all of them.

- ``trunk: trained`` (default): every parameter trains; branch 1's head learns the clean bin
  on the moving trunk.
- ``trunk: frozen``: the trunk and branch 1 keep the parent's weights (the paper's slave, in
  one artefact); the other heads train on their bins' images.

A master-slave router given this artefact as its only branch entry takes every branch of it
(``master_slave: {master: ..., branches: [slave-e3]}``). As a classifier of its own the network
answers with branch 1.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.train.strategy import StepContext
    >>> bins = [{"name": "clean"},
    ...         {"name": "noisy", "degradations": [{"degradation": "gaussian_noise",
    ...                                             "levels": [0.3]}]}]
    >>> strategy = JointBranches(bins, layers=1)
    >>> net = strategy.adapt(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    >>> net.branches
    2
    >>> context = StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=3)
    >>> loss = strategy.loss(net, torch.rand(6, 1, 2, 2), torch.arange(6) % 3, context)
    >>> context.images
    6
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models.base import check_logits
from robustlab.models.shared_trunk import SharedTrunkBranches, head_layers
from robustlab.train.bins import DegradationBins
from robustlab.train.strategies.finetune import TRUNKS
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy


def _network(model: nn.Module) -> SharedTrunkBranches:
    if not isinstance(model, SharedTrunkBranches):
        raise InvalidParameterError(
            "joint_branches trains the network its adapt() returns (a SharedTrunkBranches), "
            f"got {type(model).__name__}"
        )
    return model


@STRATEGIES.register("joint_branches", tags=("ghosh2018", "parent"))
class JointBranches(Strategy):
    """Train one head per degradation bin on a shared trunk (see the module docstring).

    Args:
        bins: the bins in branch order, ``[{name, degradations: [...], clean}, ...]``
            (:meth:`~robustlab.train.bins.DegradationBins.from_spec`; give a master the same).
        layers: how many of the parent's last ``nn.Linear`` layers form a head (ghosh2018's
            branches: fc6-fc8, 3).
        trunk: ``trained`` (the trunk and every head train) or ``frozen`` (the trunk and
            branch 1 keep the parent's weights).

    Raises:
        InvalidParameterError: for fewer than two bins, ``layers`` below 1 or a ``trunk``
            other than ``frozen`` / ``trained``; at :meth:`adapt` time, for a parent with
            fewer Linear layers than ``layers``.
    """

    parent_role = "start"

    def __init__(self, bins: list[dict[str, Any]], layers: int = 1, trunk: str = "trained") -> None:
        self.bins = DegradationBins.from_spec(bins)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise InvalidParameterError(
                f"joint_branches: layers must be a whole number >= 1 (the head's Linear "
                f"layers; ghosh2018: 3), got {layers!r}"
            )
        if trunk not in TRUNKS:
            raise InvalidParameterError(
                f"joint_branches: trunk must be one of {', '.join(TRUNKS)}, got {trunk!r}"
            )
        self.layers = layers
        self.trunk = trunk

    def adapt(self, model: nn.Module) -> nn.Module:
        """The parent wrapped with one head per bin (branch 1's is the parent's own)."""
        return SharedTrunkBranches(model, len(self.bins), self.layers)

    def _trained_branches(self) -> range:
        return range(len(self.bins)) if self.trunk == "trained" else range(1, len(self.bins))

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        """Every parameter (trunk trained), or the heads of branches 2.. (trunk frozen)."""
        network = _network(model)
        if self.trunk == "trained":
            return list(network.parameters())
        return [p for k in self._trained_branches() for p in network.head_parameters(k)]

    def train_mode(self, model: nn.Module) -> None:
        """Training mode for all (trunk trained), or only for the head layers (frozen)."""
        network = _network(model)
        if self.trunk == "trained":
            network.train()
            return
        network.eval()
        for name, _ in head_layers(network.base, self.layers):
            network.base.get_submodule(name).train()

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Mean cross-entropy, each image scored by the branch of the bin it was put into."""
        network = _network(model)
        degraded, label = self.bins.sample(x, context.generator)
        total = x.new_zeros(())
        counted = 0
        for k in self._trained_branches():
            index = (label == k).nonzero().flatten()
            if len(index) == 0:
                continue
            logits = network.branch(degraded[index], k)
            if context.images == 0 and counted == 0:
                check_logits(logits, len(index), context.num_classes)
            total = total + F.cross_entropy(logits, y[index], reduction="sum")
            counted += len(index)
        context.images += counted
        if counted == 0:  # no image of a trained branch in this batch: a zero step
            return sum((p.sum() * 0.0 for p in self.trainable(network)), total)
        return total / counted

    def describe(self) -> str:
        """One line: the bins, the head and the trunk."""
        return f"joint branches ({self.trunk} trunk, {self.layers}-layer heads): " + "; ".join(
            b.describe() for b in self.bins.bins
        )
