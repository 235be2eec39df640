"""Chains of degradations: noise then JPEG, blur then JPEG 2000 (ghosh2018's combinations).

A study sweeps one parameter of one step with an override key ``"<step>.<param>"``::

    degradations:
      - name: compose
        params: {steps: ["gaussian_noise_255:sigma=10", jpeg]}
        grid: {jpeg.quality: [10, 50, 90]}

Example:
    >>> import torch
    >>> chain = Compose(["gaussian_noise_255:sigma=10", "jpeg"], **{"jpeg.quality": 20})
    >>> chain
    Compose(GaussianNoise255(sigma=10.0), JPEG(quality=20))
    >>> chain.random
    True
    >>> chain(torch.full((2, 1, 8, 8), 0.5), torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.degrade.base import DEGRADATIONS, Degradation
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.spec import parse_spec


def _parse_step(index: int, step: object) -> tuple[str, dict[str, Any]]:
    """A step given as ``"name:key=value,..."`` or ``{name: ..., params: {...}}``."""
    if isinstance(step, str):
        return parse_spec(step)
    if isinstance(step, dict) and isinstance(step.get("name"), str):
        extra = set(step) - {"name", "params"}
        params = step.get("params") or {}
        if not extra and isinstance(params, dict):
            return step["name"], dict(params)
    raise InvalidParameterError(
        f"step {index} of compose must be a spec string such as 'jpeg:quality=20' or a mapping "
        f"{{name: jpeg, params: {{quality: 20}}}}, got {step!r}"
    )


@DEGRADATIONS.register("compose", tags=("composite",))
class Compose(Degradation):
    """Apply several degradations in order, all drawing from the same generator.

    ``overrides`` set one parameter of one step: the key ``"<step name>.<param>"`` (e.g.
    ``jpeg.quality``) or, where two steps share a name, ``"<step index>.<param>"`` (e.g.
    ``1.quality``, counting from 0). This is how a study grid sweeps one step of a chain. The
    chain is random if any step is.

    Args:
        steps: the degradations in the order they are applied, each a spec string
            (``"gaussian_noise:sigma=0.1"``) or a mapping ``{name: ..., params: {...}}``.
        **overrides: ``"<step>.<param>": value`` pairs that replace that step's parameter.
    """

    # Known only once the steps are built; each instance stores its own value.
    random = True

    def __init__(self, steps: list[str | dict[str, Any]], **overrides: Any) -> None:
        if isinstance(steps, (str, dict)) or not isinstance(steps, (list, tuple)) or not steps:
            raise InvalidParameterError(
                f"steps of compose must be a non-empty list of degradations, got {steps!r}"
            )
        parsed = [_parse_step(i, step) for i, step in enumerate(steps)]
        for name, _ in parsed:
            DEGRADATIONS.entry(name)  # unknown step names fail here, listing the valid ones
        for key, value in overrides.items():
            index, param = self._resolve(parsed, key)
            parsed[index][1][param] = value
        self.steps: list[Degradation] = [DEGRADATIONS.create(n, **p) for n, p in parsed]
        self._specs = parsed
        vars(self)["random"] = any(step.random for step in self.steps)

    @staticmethod
    def _resolve(parsed: list[tuple[str, dict[str, Any]]], key: str) -> tuple[int, str]:
        """The step index and parameter an override key names."""
        names = [name for name, _ in parsed]
        valid = []
        for i, name in enumerate(names):
            entry = DEGRADATIONS.entry(name)
            prefixes = [str(i)] if names.count(name) > 1 else [name, str(i)]
            valid += [f"{prefix}.{p}" for prefix in prefixes for p in entry.parameter_names]
        step, dot, param = key.partition(".")
        if step.isdigit() and int(step) < len(parsed):
            index = int(step)
        elif names.count(step) == 1:
            index = names.index(step)
        elif names.count(step) > 1:
            raise InvalidParameterError(
                f"override '{key}' of compose is ambiguous: {names.count(step)} steps are named "
                f"'{step}'; name the step by its index, e.g. "
                f"'{names.index(step)}.{param or '<param>'}'"
            )
        else:
            raise UnknownNameError("override key of compose", key, valid)
        entry = DEGRADATIONS.entry(names[index])
        if not dot or (param not in entry.parameter_names and not entry.open_keywords):
            raise UnknownNameError("override key of compose", key, valid)
        return index, param

    def params(self) -> dict[str, Any]:
        """The steps with every override folded in, as ``{name, params}`` mappings."""
        return {"steps": [{"name": name, "params": dict(p)} for name, p in self._specs]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(step) for step in self.steps)})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply every step in order with ``generator``."""
        for step in self.steps:
            x = step(x, generator)
        return x
