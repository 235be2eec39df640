"""Compact textual specs for pieces: ``name`` or ``name:key=value,key=value``.

Used on the command line (``-d salt_pepper:amount=0.2``, ``--defense median:size=3``). Values are
read as YAML 1.2 scalars (:mod:`robustlab.study_yaml`), so ``3`` is an int, ``0.2`` and ``1e-1``
floats, ``8/255`` a fraction, ``true`` a bool and ``reflect`` a string. Commas inside brackets or
quotes do not split, so a value may be a YAML list or mapping:
``compose:steps=[gaussian_noise:sigma=0.1, "jpeg:quality=50"]``.

Example:
    >>> parse_spec("salt_pepper:amount=0.2")
    ('salt_pepper', {'amount': 0.2})
    >>> parse_spec("pgd:eps=8/255,steps=40")
    ('pgd', {'eps': 0.03137254901960784, 'steps': 40})
    >>> parse_spec("compose:steps=[gaussian_noise:sigma=0.1, jpeg]")
    ('compose', {'steps': ['gaussian_noise:sigma=0.1', 'jpeg']})
    >>> parse_spec("median")
    ('median', {})
    >>> format_spec("median", {"size": 3})
    'median:size=3'
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from robustlab.errors import InvalidParameterError
from robustlab.study_yaml import load_value, non_finite, why_unusable

_OPEN = {"[": "]", "{": "}"}


def _split_pairs(text: str, spec: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    pairs, depth, quote, start = [], [], "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in _OPEN:
            depth.append(_OPEN[char])
        elif char in "]}":
            if not depth or depth.pop() != char:
                raise InvalidParameterError(
                    f"unbalanced '{char}' at character {i + 1} of the parameters in spec "
                    f"'{spec}'; close every [ and {{ in the order they were opened"
                )
        elif char == "," and not depth:
            pairs.append(text[start:i])
            start = i + 1
    if quote or depth:
        missing = quote or depth[-1]
        raise InvalidParameterError(
            f"spec '{spec}' ends inside a value: a closing {missing} is missing; e.g. "
            'salt_pepper:amount=[0.1, 0.2] or label="a, b"'
        )
    pairs.append(text[start:])
    return pairs


def _value(key: str, text: str, spec: str) -> Any:
    try:
        value = load_value(text) if text else None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if "divides by zero" in problem:
            raise InvalidParameterError(
                f"value '{text}' of '{key}' in spec '{spec}': {problem}; give a nonzero "
                "denominator, e.g. eps=8/255"
            ) from None
        raise InvalidParameterError(
            f"value '{text}' of '{key}' in spec '{spec}' is not valid YAML ({problem}); quote "
            f'it if it is text: {key}="{text}"'
        ) from None
    if value is None:
        raise InvalidParameterError(
            f"parameter '{key}' in spec '{spec}' has no value; write {key}=<value>"
        )
    bad = next(non_finite(value), None)
    if bad is not None:
        number = value
        for part in bad:
            number = number[part]
        raise InvalidParameterError(
            f"value '{text}' of '{key}' in spec '{spec}' {why_unusable(number)}; write a "
            "finite value in range"
        )
    return value


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:key=value,...`` into the name and a dict of typed parameters.

    Raises:
        InvalidParameterError: if the text is empty, a ``key=value`` pair is malformed or given
            twice, a bracket or quote is not closed, or a value is not valid YAML or not finite.
    """
    if not isinstance(text, str):
        raise InvalidParameterError(
            f"a spec is a string like 'median:size=3', got {type(text).__name__} {text!r}"
        )
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise InvalidParameterError(f"empty spec '{text}'; expected name or name:key=value,...")
    params: dict[str, Any] = {}
    if rest.strip():
        for pair in _split_pairs(rest, text):
            key, eq, value = pair.partition("=")
            key = key.strip()
            if not eq or not key:
                raise InvalidParameterError(
                    f"malformed parameter '{pair}' in spec '{text}'; expected key=value, "
                    "e.g. salt_pepper:amount=0.2"
                )
            if key in params:
                raise InvalidParameterError(
                    f"parameter '{key}' is given twice in spec '{text}'; keep one"
                )
            params[key] = _value(key, value.strip(), text)
    return name, params


def format_spec(name: str, params: dict[str, Any]) -> str:
    """The inverse of :func:`parse_spec` (keys in the given order)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in params.items())


def _format_value(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return str(value)
