"""Input defences: ``nn.Module``s mapping images to images, placed in front of a classifier.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.defend import create_defense, defended
    >>> model = defended(nn.Flatten(), create_defense("median", size=3))
    >>> model(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustlab.registry import Registry

DEFENSES: Registry[nn.Module] = Registry("defence")


def create_defense(name: str, **params: Any) -> nn.Module:
    """Build the registered input defence ``name``; unknown names list the valid ones."""
    return DEFENSES.create(name, **params)


def defended(classifier: nn.Module, defense: nn.Module) -> nn.Sequential:
    """The classifier with ``defense`` applied to its input: ``classifier(defense(x))``."""
    return nn.Sequential(defense, classifier)


@DEFENSES.register("none", tags=("identity",))
class NoDefense(nn.Identity):
    """No defence: the input goes to the classifier unchanged."""
