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
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from robustlab.errors import (
    ConfigError,
    DataError,
    InvalidParameterError,
    ModelError,
    RobustlabError,
    UnknownNameError,
)

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


# Errors built from one message, which create() prefixes with the piece that raised them.
_PLAIN_ERRORS = (InvalidParameterError, ModelError, DataError, ConfigError, RobustlabError)

# Annotations whose values the registry checks before building a piece; others are the
# piece's own business.
_WORDS = {
    "float": "a number",
    "int": "a whole number",
    "bool": "true or false",
    "str": "a string",
    "None": "none (null)",
}
_SIMPLE_TYPES = frozenset(_WORDS)


def _fits(value: Any, kind: str) -> bool:
    """Whether ``value`` is acceptable for a parameter annotated with the simple type ``kind``.

    Numbers may come as strings (YAML reads ``1e-3`` as one) and whole floats pass for ints;
    the piece converts and range-checks them itself.
    """
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return False
        return kind == "float" or number.is_integer()
    if kind == "float":
        return isinstance(value, numbers.Real) or (hasattr(value, "__float__") and _scalar(value))
    return isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and float(value).is_integer()
    )


def _scalar(value: Any) -> bool:
    """A one-element array or tensor (``numel`` / ``size`` of 1)."""
    size = getattr(value, "numel", None) or getattr(value, "size", None)
    count = size() if callable(size) else size
    return count == 1


def _type_problem(kind: str, name: str, p: Parameter, value: Any) -> str | None:
    """Why ``value`` does not fit ``p``'s annotation, or None (also for complex annotations)."""
    wanted = [part.strip() for part in p.annotation.split("|")]
    if not wanted or any(w not in _SIMPLE_TYPES for w in wanted):
        return None
    if any(_fits(value, w) for w in wanted):
        return None
    example = p.default if p.default is not None else {"float": 0.5, "int": 3}.get(wanted[0])
    shown = str(example).lower() if isinstance(example, bool) else example
    hint = f"; e.g. {name}:{p.name}={shown}" if example is not None else ""
    words = " or ".join(_WORDS[w] for w in wanted)
    return (
        f"{kind} '{name}': {p.name} must be {words}, got {value!r} ({type(value).__name__}){hint}"
    )


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
            InvalidParameterError: if ``name`` is not a string.
        """
        if not isinstance(name, str):
            raise InvalidParameterError(
                f"a {self.kind} is named by a string, got {type(name).__name__} {name!r}; "
                f"valid: {', '.join(self.names())}"
            )
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
            InvalidParameterError: for a missing, mistyped or out-of-range parameter; the message
            names the piece.
        """
        self.check_parameters(name, params)
        try:
            return self.entry(name).factory(**params)
        except RobustlabError as err:
            text = str(err)
            if type(err) not in _PLAIN_ERRORS or any(
                text.startswith(f"{name}{end}") or f"'{name}'" in text for end in (":", " ")
            ):
                raise
            # Say which piece refused: the same parameter name means different things in
            # different pieces.
            raise type(err)(f"{self.kind} '{name}': {text}") from err
        except (TypeError, ValueError) as err:
            # A raw error from the factory: most often a value of the wrong type; name it.
            for p in self.entry(name).parameters:
                if p.name in params and (
                    problem := _type_problem(self.kind, name, p, params[p.name])
                ):
                    raise InvalidParameterError(problem) from err
            raise InvalidParameterError(
                f"{self.kind} '{name}': {err}; see its parameters with robustlab list"
            ) from err

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
