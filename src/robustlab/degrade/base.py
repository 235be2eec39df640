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

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from robustlab.errors import InvalidParameterError
from robustlab.registry import Registry
from robustlab.tensors import checked_images

_Call = Callable[["Degradation", torch.Tensor, torch.Generator], torch.Tensor]


def _checking(call: _Call) -> _Call:
    """``call`` preceded by the one input check of image batches (:func:`checked_images`)."""

    @functools.wraps(call)
    def checked(
        self: Degradation, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        with checked_images(x, f"the input of {self!r}"):
            if not isinstance(generator, torch.Generator):
                raise InvalidParameterError(
                    f"{self!r} needs a torch.Generator as its second argument (every random "
                    f"draw comes from it), got {type(generator).__name__}; e.g. "
                    "degradation(x, torch.Generator().manual_seed(0))"
                )
            return call(self, x, generator)

    checked.checks_input = True  # type: ignore[attr-defined]
    return checked


class Degradation(ABC):
    """Base class of all degradations.

    Subclasses set :attr:`random` to ``False`` when the output does not depend on the generator
    (a study then runs one trial of them instead of many).
    """

    random: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give every subclass's ``__call__`` the one input check of image batches.

        The check (a float ``(N, C, H, W)`` batch of finite values in ``[0, 1]``, see
        :func:`robustlab.tensors.check_images`) runs once per outermost call: the degradations
        a composite calls in turn do not check again.
        """
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "checks_input", False):
            cls.__call__ = _checking(call)  # type: ignore[method-assign,assignment]

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


def _number(name: str, value: object, wanted: str) -> float:
    """``value`` as a float, or an error naming the parameter and what it must be."""
    if isinstance(value, bool | bytes | list | tuple | dict):
        raise InvalidParameterError(
            f"{name} must be a number {wanted}, got {value!r}; e.g. {name}=0.1"
        )
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{name} must be a number {wanted}, got {value!r}; e.g. {name}=0.1"
        ) from None


def check_fraction(name: str, value: float) -> float:
    """Validate a probability-like parameter in ``[0, 1]``."""
    value = _number(name, value, "in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise InvalidParameterError(f"{name} must be in [0, 1], got {value}")
    return value


def check_non_negative(name: str, value: float) -> float:
    """Validate a parameter that must be ``>= 0`` (a noise level, a blur sigma)."""
    value = _number(name, value, ">= 0")
    if not 0.0 <= value < math.inf:  # also rejects NaN
        raise InvalidParameterError(
            f"{name} must be >= 0, got {value}; give a finite number, e.g. {name}=0.1"
        )
    return value


@DEGRADATIONS.register("none", tags=("identity",))
class Identity(Degradation):
    """No degradation: the clean input, used for the clean column of every table."""

    random = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return ``x`` unchanged."""
        return x
