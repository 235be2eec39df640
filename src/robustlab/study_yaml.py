r"""YAML as a study author means it: 1.2 numbers, fractions, no duplicate keys, line numbers.

PyYAML implements YAML 1.1, where ``1e-1`` and ``1e5`` are strings (a float needs a dot) and a
repeated key silently replaces the earlier one. Study files and ``key=value`` specs are read with
:class:`StudyLoader` instead:

* numbers follow YAML 1.2: ``1e-1``, ``1E5``, ``.5`` and ``2.`` are floats;
* a fraction ``8/255`` is a float (``8 / 255``), the way papers write an L-inf budget; a quoted
  ``"8/255"`` stays a string;
* a key given twice in one mapping is an error naming both lines;
* every key's line is kept (:func:`load_documents` returns them), so a validation error can say
  where in the file the bad value is.

Example:
    >>> load_value("{eps: 8/255, sigma: 1e-1, steps: 40}")
    {'eps': 0.03137254901960784, 'sigma': 0.1, 'steps': 40}
    >>> try:
    ...     load_value("{a: 1,\n a: 2}")
    ... except DuplicateKeyError as err:
    ...     print(err.problem)
    duplicate key 'a' at line 2 (first given at line 1)
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: Where in a document a value is: mapping keys and sequence indices from the root.
Location = tuple[str | int, ...]

_NUMBER = r"(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
_FLOAT_12 = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+"  # 1e-1, 1.5E3
    r"|[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?"  # 2., 2.5
    r"|\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"  # .5
    r"|\.(?:inf|Inf|INF))"
    r"|\.(?:nan|NaN|NAN))$"
)
_FRACTION = re.compile(rf"^[-+]?{_NUMBER}\s*/\s*{_NUMBER}$")
_FRACTION_TAG = "tag:robustlab,2026:fraction"


class DuplicateKeyError(ConstructorError):
    """A mapping gives one key twice (PyYAML would keep the last silently)."""


class StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats, fractions and duplicate keys refused."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Build a mapping, refusing a key that is given twice."""
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in first:
                raise DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key '{key}' at line {line} (first given at line {first[key]})",
                    key_node.start_mark,
                    "a key may appear once per mapping; merge the two entries into one (YAML "
                    "would otherwise keep only the last)",
                )
            if isinstance(key, Hashable):
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def _fraction(loader: yaml.SafeLoader, node: Node) -> float:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return float(fraction_value(text))
    except ValueError as err:
        raise ConstructorError(None, None, str(err), node.start_mark) from None


def fraction_value(value: Any) -> Any:
    """A fraction written as text (``"8/255"``) as its float; any other value unchanged.

    Example:
        >>> fraction_value("8/255") == 8 / 255, fraction_value("jpeg"), fraction_value(0.5)
        (True, 'jpeg', 0.5)

    Raises:
        ValueError: for a fraction whose denominator is zero.
    """
    if not isinstance(value, str) or not _FRACTION.match(value.strip()):
        return value
    numerator, _, denominator = value.replace("_", "").partition("/")
    if float(denominator) == 0.0:
        raise ValueError(f"the fraction '{value.strip()}' divides by zero")
    return float(numerator) / float(denominator)


def _install_resolvers() -> None:
    # A copy per first character, so PyYAML's own SafeLoader keeps its 1.1 rules.
    resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    StudyLoader.yaml_implicit_resolvers = resolvers
    StudyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
    StudyLoader.add_implicit_resolver(_FRACTION_TAG, _FRACTION, list("-+0123456789."))
    # The new resolvers must win over YAML 1.1's float and int for the same first character.
    for first in "-+0123456789.":
        entries = StudyLoader.yaml_implicit_resolvers[first]
        ours = [e for e in entries if e[1] in (_FLOAT_12, _FRACTION)]
        StudyLoader.yaml_implicit_resolvers[first] = ours + [e for e in entries if e not in ours]
    StudyLoader.add_constructor(_FRACTION_TAG, _fraction)


_install_resolvers()


def _lines(node: Node, where: Location, into: dict[Location, int]) -> None:
    into.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                inner = (*where, str(key_node.value))
                into[inner] = key_node.start_mark.line + 1
                _lines(value_node, inner, into)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*where, index), into)


def load_documents(text: str) -> list[tuple[Any, dict[Location, int]]]:
    """Every non-empty document of ``text``, each with the line of every key and item.

    Raises:
        yaml.YAMLError: malformed YAML or a duplicate key; the error carries the position.
    """
    loader = StudyLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[Location, int] = {}
            _lines(node, (), lines)
            value = loader.construct_document(node)
            if value is not None:
                documents.append((value, lines))
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    return documents


def load_value(text: str) -> Any:
    """One YAML value (a spec's ``value``, a flow mapping...) read with :class:`StudyLoader`."""
    return yaml.load(text, Loader=StudyLoader)  # a SafeLoader subclass: no arbitrary objects


#: No parameter of any piece means anything this large; 1e308 is a typo that runs and breaks.
LARGEST = 1e12


def non_finite(value: Any, where: Location = ()) -> Iterator[Location]:
    """The locations of every unusable float inside ``value`` (mappings and lists searched).

    Unusable: infinite, NaN, or larger in magnitude than :data:`LARGEST`.
    """
    if isinstance(value, float) and not abs(value) <= LARGEST:
        yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite(item, (*where, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from non_finite(item, (*where, index))


def why_unusable(value: float) -> str:
    """Why :func:`non_finite` flagged ``value``."""
    if math.isfinite(value):
        return f"is {value:g}, larger than any parameter means (at most {LARGEST:g})"
    return f"is {value}, not a finite number"


def line_of(lines: dict[Location, int], where: Location) -> int | None:
    """The line of ``where``, or of its closest enclosing key or item that has one."""
    for end in range(len(where), -1, -1):
        if where[:end] in lines:
            return lines[where[:end]]
    return None


def dotted(where: Location) -> str:
    """``('attacks', 0, 'params', 'eps')`` as ``attacks[0].params.eps``."""
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"
