"""Training perturbations: a registered degradation at levels written once for every strategy.

A strategy that trains on degraded images (``augment``, ``constant``, ``incremental``,
``transfer``, ``finetune``) takes a *perturbation*: a degradation of the registry, the parameter
it varies (its registered severity by default) and the *levels*:

- a list of values (``[0.001, 0.013, 0.025]``): each image (or each batch) gets one of them,
  drawn uniformly;
- a range ``{low, high}``: uniform on ``[low, high]``, or on the integers ``low..high`` with
  ``integer: true`` (cavey: 1 to 10 hot pixels);

with ``draw: per_image`` (default) or ``per_batch``. Draws come from the strategy's generator.
Images that drew the same level are degraded in one batched call; the Gaussian-noise family
takes one level per image in a single call (:meth:`Perturbation.apply_levels`), so a real range
drawn per image stays one tensor operation.

Example:
    >>> import torch
    >>> p = Perturbation("gaussian_noise_variance", {"low": 0.001, "high": 0.05})
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.full((4, 1, 8, 8), 0.5)
    >>> p.apply(x, g).shape
    torch.Size([4, 1, 8, 8])
    >>> Perturbation("hot_pixels", {"low": 1, "high": 10, "integer": True}).describe()
    'hot_pixels count in 1..10 per image'
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustlab.degrade import DEGRADATIONS, Degradation, create_degradation
from robustlab.errors import InvalidParameterError

Draw = Literal["per_image", "per_batch"]
_STD_OF: dict[str, Any] = {
    # Degradations whose level is one standard deviation of clipped additive Gaussian noise:
    # name -> level-to-std map, for the one-call per-image path.
    "gaussian_noise": lambda v: v,
    "gaussian_noise_variance": lambda v: v.clamp(min=0).sqrt(),
    "gaussian_noise_255": lambda v: v / 255.0,
}


class Perturbation:
    """A degradation at training levels drawn per image or per batch.

    Args:
        degradation: a registered degradation name (``gaussian_noise_variance``, ``hot_pixels``).
        levels: a list of values, or ``{low, high, integer, draw}`` for a range; a list may be
            given as ``{values: [...], draw: per_batch}``.
        parameter: the degradation's parameter the levels set (its severity by default).
        params: the degradation's other parameters, fixed.
        draw: ``per_image`` or ``per_batch`` (a ``draw`` inside ``levels`` wins).

    Raises:
        InvalidParameterError: for an unknown degradation or parameter, an empty list, a range
            with ``low > high``, or a level the degradation refuses.
    """

    def __init__(
        self,
        degradation: str,
        levels: list[float] | dict[str, Any],
        parameter: str | None = None,
        params: dict[str, Any] | None = None,
        draw: Draw = "per_image",
    ) -> None:
        entry = DEGRADATIONS.entry(degradation)
        self.degradation = degradation
        self.parameter = parameter or entry.severity
        if self.parameter is None:
            raise InvalidParameterError(
                f"degradation '{degradation}' has no severity parameter; say which parameter "
                f"the training levels set (parameter: one of {entry.parameter_names})"
            )
        self.params = dict(params or {})
        DEGRADATIONS.check_parameters(degradation, {**self.params, self.parameter: 0})
        self.values: list[float] | None = None
        self.low = self.high = 0.0
        self.integer = False
        self.draw: Draw = draw
        if isinstance(levels, dict):
            spec = dict(levels)
            self.draw = spec.pop("draw", draw)
            if "values" in spec:
                self.values = [float(v) for v in spec.pop("values")]
            else:
                if "low" not in spec or "high" not in spec:
                    raise InvalidParameterError(
                        f"training levels {levels!r}: a range needs low and high "
                        "(e.g. {low: 1, high: 10, integer: true}), or give a list of values"
                    )
                self.low, self.high = float(spec.pop("low")), float(spec.pop("high"))
                self.integer = bool(spec.pop("integer", False))
                if not self.low <= self.high:
                    raise InvalidParameterError(
                        f"training levels: low {self.low:g} must not exceed high {self.high:g}"
                    )
            if spec:
                raise InvalidParameterError(
                    f"training levels: unknown keys {sorted(spec)}; valid: values, low, high, "
                    "integer, draw"
                )
        elif isinstance(levels, list | tuple):
            self.values = [float(v) for v in levels]
        else:
            raise InvalidParameterError(
                f"training levels must be a list of values or a range {{low, high}}, got {levels!r}"
            )
        if self.values is not None and not self.values:
            raise InvalidParameterError("training levels: the list of values is empty")
        if self.draw not in ("per_image", "per_batch"):
            raise InvalidParameterError(
                f"training levels: draw must be per_image or per_batch, got {self.draw!r}"
            )
        for value in self.extremes():
            self.build(value)  # out-of-range levels fail here, before any training

    def extremes(self) -> list[float]:
        """The smallest and largest level (every value of a list)."""
        return list(self.values) if self.values is not None else [self.low, self.high]

    def _cast(self, value: float) -> Any:
        entry = DEGRADATIONS.entry(self.degradation)
        annotation = next(
            (p.annotation for p in entry.parameters if p.name == self.parameter), "float"
        )
        return round(value) if self.integer or annotation == "int" else float(value)

    def build(self, value: float) -> Degradation:
        """The degradation at level ``value``."""
        assert self.parameter is not None
        params: dict[str, Any] = {**self.params, self.parameter: self._cast(value)}
        return create_degradation(self.degradation, **params)

    def draw_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` levels (float64, on the generator's device), one per image or one repeated."""
        device = generator.device
        count = n if self.draw == "per_image" else 1
        if self.values is not None:
            table = torch.tensor(self.values, dtype=torch.float64, device=device)
            index = torch.randint(len(table), (count,), generator=generator, device=device)
            levels = table[index]
        elif self.integer:
            levels = torch.randint(
                int(self.low), int(self.high) + 1, (count,), generator=generator, device=device
            ).double()
        else:
            u = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
            levels = self.low + (self.high - self.low) * u
        return levels.expand(n).clone() if count == 1 else levels

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrade every image of ``x`` at a level drawn from ``generator``."""
        return self.apply_levels(x, self.draw_levels(len(x), generator), generator)

    def apply_levels(
        self, x: torch.Tensor, levels: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Degrade image ``i`` of ``x`` at ``levels[i]``, batched over equal levels."""
        to_std = _STD_OF.get(self.degradation)
        if to_std is not None and not self.params:
            std = to_std(levels.to(x.device, torch.float64)).to(x.dtype).view(-1, 1, 1, 1)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return noise.mul_(std).add_(x).clamp_(0.0, 1.0)
        values = levels.tolist()
        unique = sorted(set(values))
        if len(unique) == 1:
            return self.build(unique[0])(x, generator)
        out = torch.empty_like(x)
        for value in unique:
            index = torch.tensor(
                [i for i, v in enumerate(values) if v == value], device=x.device, dtype=torch.long
            )
            out[index] = self.build(value)(x[index], generator)
        return out

    def describe(self) -> str:
        """One line: ``gaussian_noise sigma in [0.1, 0.3] per image``."""
        if self.values is not None:
            shown = ", ".join(f"{v:g}" for v in self.values)
            span = f"in {{{shown}}}"
        elif self.integer:
            span = f"in {int(self.low)}..{int(self.high)}"
        else:
            span = f"in [{self.low:g}, {self.high:g}]"
        where = "per image" if self.draw == "per_image" else "per batch"
        return f"{self.degradation} {self.parameter} {span} {where}"

    def spec(self) -> dict[str, Any]:
        """A JSON-able description (for reports and model cards)."""
        levels: Any = (
            self.values
            if self.values is not None
            else {"low": self.low, "high": self.high, "integer": self.integer}
        )
        return {
            "degradation": self.degradation,
            "parameter": self.parameter,
            "params": self.params,
            "levels": levels,
            "draw": self.draw,
        }


def linspace(low: float, high: float, count: int) -> list[float]:
    """``count`` evenly spaced levels from ``low`` to ``high`` (cavey's noise variances).

    Example:
        >>> linspace(0.001, 0.05, 5)
        [0.001, 0.01325, 0.0255, 0.03775, 0.05]
    """
    if count < 1:
        raise InvalidParameterError(f"linspace needs count >= 1, got {count}")
    if count == 1:
        return [low]
    step = (high - low) / (count - 1)
    return [round(low + i * step, 12) for i in range(count)]


def perturbation_from(params: dict[str, Any] | None) -> Perturbation | None:
    """A :class:`Perturbation` from a strategy's ``perturbation`` parameter (None stays None)."""
    if params is None:
        return None
    if not isinstance(params, dict) or "degradation" not in params or "levels" not in params:
        raise InvalidParameterError(
            "perturbation must be a mapping with degradation and levels, e.g. "
            "{degradation: gaussian_noise_variance, levels: {low: 0.001, high: 0.05}}"
        )
    extra = set(params) - {"degradation", "levels", "parameter", "params", "draw"}
    if extra:
        raise InvalidParameterError(
            f"perturbation: unknown keys {sorted(extra)}; valid: degradation, levels, "
            "parameter, params, draw"
        )
    return Perturbation(**params)


def perturb_share(
    x: torch.Tensor, share: float, perturbation: Perturbation, generator: torch.Generator
) -> torch.Tensor:
    """``x`` with a random ``share`` of its images perturbed (each image independently).

    Example:
        >>> import torch
        >>> p = Perturbation("salt_pepper", [1.0])
        >>> x = torch.full((1000, 1, 2, 2), 0.5)
        >>> y = perturb_share(x, 0.25, p, torch.Generator().manual_seed(0))
        >>> changed = (y != x).flatten(1).any(dim=1).float().mean().item()
        >>> 0.2 < changed < 0.3
        True
    """
    if share >= 1.0:
        return perturbation.apply(x, generator)
    chosen = torch.rand(len(x), generator=generator, device=generator.device) < share
    index = chosen.nonzero().flatten().to(x.device)
    out = x.clone()
    if len(index):
        out[index] = perturbation.apply(x[index], generator)
    return out
