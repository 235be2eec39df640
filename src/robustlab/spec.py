"""Compact textual specs for pieces: ``name`` or ``name:key=value,key=value``.

Used on the command line (``-d salt_pepper:amount=0.2``, ``--defense median:size=3``). Values are
read as YAML scalars, so ``3`` is an int, ``0.2`` a float, ``true`` a bool and ``reflect`` a string.

Example:
    >>> parse_spec("salt_pepper:amount=0.2")
    ('salt_pepper', {'amount': 0.2})
    >>> parse_spec("median")
    ('median', {})
    >>> format_spec("median", {"size": 3})
    'median:size=3'
"""

from __future__ import annotations

from typing import Any

import yaml

from robustlab.errors import InvalidParameterError


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:key=value,...`` into the name and a dict of typed parameters.

    Raises:
        InvalidParameterError: if the text is empty or a ``key=value`` pair is malformed.
    """
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise InvalidParameterError(f"empty spec '{text}'; expected name or name:key=value,...")
    params: dict[str, Any] = {}
    if rest.strip():
        for pair in rest.split(","):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise InvalidParameterError(
                    f"malformed parameter '{pair}' in spec '{text}'; expected key=value, "
                    "e.g. salt_pepper:amount=0.2"
                )
            params[key.strip()] = yaml.safe_load(value.strip())
    return name, params


def format_spec(name: str, params: dict[str, Any]) -> str:
    """The inverse of :func:`parse_spec` (keys in the given order)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={v}" for k, v in params.items())
