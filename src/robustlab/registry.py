"""Named, typed building blocks: one registry per kind of piece.

A registry maps a name to a factory (a class or function). The factory's keyword parameters,
with their annotations and defaults, are the piece's parameters: :meth:`Registry.create`
rejects unknown parameters with the list of valid ones, and :meth:`Registry.describe` feeds
``robustlab list``. Registering a piece is all it takes to make it usable from YAML and the CLI.

Example:
    >>> shapes: Registry[object] = Registry("shape")
    >>> @shapes.register("square", severity="side")
    ... class Square:
    ...     '''A square.'''
    ...     def __init__(self, side: float = 1.0) -> None:
    ...         self.side = side
    >>> shapes.create("square", side=2.0).side
    2.0
    >>> shapes.entry("square").severity
    'side'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from robustlab.errors import InvalidParameterError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Parameter:
    """One keyword parameter of a registered piece."""

    name: str
    annotation: str
    default: Any
    required: bool

    def __str__(self) -> str:
        if self.required:
            return f"{self.name}: {self.annotation}"
        return f"{self.name}: {self.annotation} = {self.default!r}"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered piece: its name, factory, parameters and one-line summary."""

    name: str
    factory: Callable[..., T]
    summary: str
    parameters: tuple[Parameter, ...]
    severity: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    open_keywords: bool = False  # the factory takes **kwargs and validates them itself

    @property
    def parameter_names(self) -> list[str]:
        """Names of the keyword parameters, in declaration order."""
        return [p.name for p in self.parameters]


def _parameters_of(factory: Callable[..., Any]) -> tuple[Parameter, ...]:
    signature = inspect.signature(factory)
    found = []
    for p in signature.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = p.annotation if p.annotation is not p.empty else "Any"
        if not isinstance(annotation, str):
            annotation = getattr(annotation, "__name__", str(annotation))
        found.append(
            Parameter(
                name=p.name,
                annotation=annotation,
                default=None if p.default is p.empty else p.default,
                required=p.default is p.empty,
            )
        )
    return tuple(found)


def _summary_of(factory: Callable[..., Any]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0].replace("``", "") if doc.strip() else ""


class Registry(Generic[T]):
    """A name -> factory mapping for one kind of building block.

    Args:
        kind: what the registry holds, used in error messages ("degradation", "defence", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, severity: str | None = None, tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory under ``name``.

        Args:
            name: the public name, as written in YAML and on the command line.
            severity: the parameter that a sweep varies by default (e.g. ``sigma``).
            tags: free-form labels shown by ``robustlab list``.
        """

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            parameters = _parameters_of(factory)
            if severity is not None and severity not in [p.name for p in parameters]:
                raise ValueError(f"{self.kind} '{name}' has no parameter '{severity}'")
            open_keywords = any(
                p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
            )
            self._entries[name] = Entry(
                name, factory, _summary_of(factory), parameters, severity, tags, open_keywords
            )
            return factory

        return decorate

    def entry(self, name: str) -> Entry[T]:
        """The entry registered under ``name``.

        Raises:
            UnknownNameError: if no such name is registered; the message lists the valid names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def check_parameters(self, name: str, params: dict[str, Any]) -> None:
        """Raise if ``params`` names a parameter ``name`` does not take, or misses one it needs."""
        entry = self.entry(name)
        valid = entry.parameter_names
        for key in params:
            if key not in valid and not entry.open_keywords:
                raise UnknownNameError(f"parameter of {self.kind} '{name}'", key, valid)
        for p in entry.parameters:
            if p.required and p.name not in params:
                raise InvalidParameterError(
                    f"{self.kind} '{name}' needs parameter '{p.name}' ({p.annotation})"
                )

    def create(self, name: str, **params: Any) -> T:
        """Build the piece ``name`` with keyword parameters ``params``.

        Raises:
            UnknownNameError: for an unknown name or parameter.
            InvalidParameterError: for a missing or out-of-range parameter.
        """
        self.check_parameters(name, params)
        try:
            return self.entry(name).factory(**params)
        except TypeError as err:
            raise InvalidParameterError(f"{self.kind} '{name}': {err}") from err

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
