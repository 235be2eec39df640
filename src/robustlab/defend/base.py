"""Input defences: ``nn.Module``s mapping images to images, placed in front of a classifier.

Every registered defence checks its input once per outermost call: a float ``(N, C, H, W)``
batch of finite values (:func:`robustlab.tensors.check_images`). Values outside ``[0, 1]`` are
allowed, since a defence also runs on the noisy copies of randomised smoothing and on unclipped
noise; a defence that needs pixel values (the JPEG codec) checks the range through the codec.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.defend import create_defense, defended
    >>> model = defended(nn.Flatten(), create_defense("median", size=3))
    >>> model(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.registry import Registry
from robustlab.tensors import checked_images

_Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _checking(forward: _Forward, name: str) -> _Forward:
    """``forward`` preceded by the one input check of image batches."""

    @functools.wraps(forward)
    def checked(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with checked_images(x, f"the input of defence '{name}'", pixel_range=False):
            return forward(self, x)

    checked.checks_input = True  # type: ignore[attr-defined]
    return checked


class _DefenseRegistry(Registry[nn.Module]):
    """The defence registry: registering a module class also gives its ``forward`` the check."""

    def register(
        self, name: str, *, severity: str | None = None, tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
        """Register like :meth:`Registry.register`; module classes get the input check."""
        decorate = super().register(name, severity=severity, tags=tags)

        def register_checked(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            if isinstance(factory, type) and issubclass(factory, nn.Module):
                forward = factory.forward
                if not getattr(forward, "checks_input", False):
                    factory.forward = _checking(forward, name)  # type: ignore[method-assign]
            return decorate(factory)

        return register_checked


DEFENSES: Registry[nn.Module] = _DefenseRegistry("defence")


def create_defense(name: str, **params: Any) -> nn.Module:
    """Build the registered input defence ``name``; unknown names list the valid ones."""
    return DEFENSES.create(name, **params)


def defended(classifier: nn.Module, defense: nn.Module) -> nn.Sequential:
    """The classifier with ``defense`` applied to its input: ``classifier(defense(x))``.

    Raises:
        InvalidParameterError: if either is not an ``nn.Module`` (e.g. a defence name instead
            of ``create_defense(name)``).
    """
    for role, module in (("classifier", classifier), ("defense", defense)):
        if not isinstance(module, nn.Module):
            fix = "create_defense('median', size=3)" if role == "defense" else "load_model(path)"
            raise InvalidParameterError(
                f"defended(): the {role} must be a torch.nn.Module, got {module!r} "
                f"({type(module).__name__}); build one with e.g. {fix}"
            )
    return nn.Sequential(defense, classifier)


@DEFENSES.register("none", tags=("identity",))
class NoDefense(nn.Identity):
    """No defence: the input goes to the classifier unchanged."""
