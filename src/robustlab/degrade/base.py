"""The degradation contract and its registry.

A degradation maps a batch ``(N, C, H, W)`` in ``[0, 1]`` and a ``torch.Generator`` to a degraded
batch of the same shape, range and device. Random degradations take every draw from the given
generator, so the same seed gives the same batch bit for bit on CPU. Registering a class in
:data:`DEGRADATIONS` makes it usable from YAML, the CLI and ``robustlab list`` at once.

Example:
    >>> import torch
    >>> from robustlab.degrade import create_degradation
    >>> noise = create_degradation("gaussian_noise", sigma=0.1)
    >>> g = torch.Generator().manual_seed(0)
    >>> noise(torch.full((1, 1, 4, 4), 0.5), g).shape
    torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from robustlab.errors import InvalidParameterError
from robustlab.registry import Registry


class Degradation(ABC):
    """Base class of all degradations.

    Subclasses set :attr:`random` to ``False`` when the output does not depend on the generator
    (a study then runs one trial of them instead of many).
    """

    random: ClassVar[bool] = True

    @abstractmethod
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrade the batch ``x`` using draws from ``generator``."""

    def params(self) -> dict[str, Any]:
        """The parameters this instance was built with."""
        return dict(vars(self))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


DEGRADATIONS: Registry[Degradation] = Registry("degradation")


def create_degradation(name: str, **params: Any) -> Degradation:
    """Build the registered degradation ``name``; unknown names list the valid ones."""
    return DEGRADATIONS.create(name, **params)


def check_fraction(name: str, value: float) -> float:
    """Validate a probability-like parameter in ``[0, 1]``."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InvalidParameterError(f"{name} must be in [0, 1], got {value}")
    return value


def check_non_negative(name: str, value: float) -> float:
    """Validate a parameter that must be ``>= 0`` (a noise level, a blur sigma)."""
    value = float(value)
    if not value >= 0.0:  # also rejects NaN
        raise InvalidParameterError(f"{name} must be >= 0, got {value}")
    return value


@DEGRADATIONS.register("none", tags=("identity",))
class Identity(Degradation):
    """No degradation: the clean input, used for the clean column of every table."""

    random = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return ``x`` unchanged."""
        return x
