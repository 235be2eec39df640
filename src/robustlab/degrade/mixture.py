"""Mixtures of degradations: each image gets one of several (cavey's pixel defects of any type).

cavey trains against "1-10 pixels of each type": every training image gets hot, dead *or*
stuck pixels. ``one_of`` draws, per image, one of its steps uniformly from the generator and
applies each step once to the images that drew it (batched). A keyword override sets that
parameter on every step that takes it, so a study (or a training perturbation) sweeps the
shared level of all steps at once::

    degradations:
      - name: one_of
        label: defective-pixels
        params: {steps: [hot_pixels, dead_pixels, stuck_pixels]}
        grid: {count: [1, 2, 5]}

Example:
    >>> import torch
    >>> mix = OneOf(["hot_pixels", "dead_pixels"], count=3)
    >>> mix
    OneOf(HotPixels(count=3), DeadPixels(count=3))
    >>> y = mix(torch.full((6, 1, 8, 8), 0.5), torch.Generator().manual_seed(0))
    >>> sorted({int((img == 1).sum()) for img in y} | {int((img == 0).sum()) for img in y})
    [0, 3]
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.degrade.base import DEGRADATIONS, Degradation
from robustlab.degrade.compose import _parse_step
from robustlab.errors import InvalidParameterError


@DEGRADATIONS.register("one_of", tags=("composite", "mixture"))
class OneOf(Degradation):
    """Each image degraded by one of ``steps``, drawn uniformly per image.

    Args:
        steps: the candidate degradations, each a spec string (``"hot_pixels:count=2"``) or a
            mapping ``{name: ..., params: {...}}``; at least two.
        **overrides: ``param: value`` set on every step that takes ``param`` (at least one
            must), e.g. ``count=2`` for hot, dead and stuck pixels.
    """

    random = True

    def __init__(self, steps: list[str | dict[str, Any]], **overrides: Any) -> None:
        if isinstance(steps, (str, dict)) or not isinstance(steps, (list, tuple)) or len(steps) < 2:
            raise InvalidParameterError(
                f"steps of one_of must be a list of at least two degradations, got {steps!r}"
            )
        parsed = [_parse_step(i, step) for i, step in enumerate(steps)]
        for key, value in overrides.items():
            takers = [p for name, p in parsed if key in DEGRADATIONS.entry(name).parameter_names]
            if not takers:
                raise InvalidParameterError(
                    f"override '{key}' of one_of: no step takes it (steps: "
                    f"{', '.join(name for name, _ in parsed)})"
                )
            for params in takers:
                params[key] = value
        self.steps: list[Degradation] = [DEGRADATIONS.create(n, **p) for n, p in parsed]
        self._specs = parsed

    def params(self) -> dict[str, Any]:
        """The steps with every override folded in, as ``{name, params}`` mappings."""
        return {"steps": [{"name": name, "params": dict(p)} for name, p in self._specs]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(step) for step in self.steps)})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw a step per image, then degrade each step's images in one call."""
        choice = torch.randint(
            len(self.steps), (len(x),), generator=generator, device=generator.device
        ).to(x.device)
        out = x.clone()
        for index, step in enumerate(self.steps):
            chosen = (choice == index).nonzero().flatten()
            if len(chosen):
                out[chosen] = step(x[chosen], generator)
        return out
