"""Degradation bins: named sets of degradation settings that a quality network learns to tell apart.

ghosh2018's master network (Section 4.1) classifies an input into *quality bins* ("each
quality bin corresponds to a set of quality factors"): clean and mildly compressed images, JPEG
at quality 20-5, JPEG 2000 at strong compression. A :class:`DegradationBin` is any such set: a
name, the training perturbations of :mod:`robustlab.train.perturbation` that produce its images
(a degradation of the registry at levels drawn per image), and whether clean images belong to
it. The same code then routes noise levels, blur or pixel defects, and the adaptive filter's
detector recognises kinds of degradation (a bin per kind).

:class:`DegradationBins` draws, per image, a bin uniformly and then one of the bin's members
(a perturbation, or the clean image) uniformly, all from the caller's generator; each member is
applied once to the images that drew it (batched).

Example:
    >>> import torch
    >>> bins = DegradationBins.from_spec([
    ...     {"name": "clean"},
    ...     {"name": "noisy", "degradations": [{"degradation": "gaussian_noise", "levels": [0.3]}]},
    ... ])
    >>> bins.names
    ['clean', 'noisy']
    >>> x = torch.full((6, 1, 8, 8), 0.5)
    >>> degraded, label = bins.sample(x, torch.Generator().manual_seed(0))
    >>> bool(((degraded != x).flatten(1).any(dim=1) == (label == 1)).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robustlab.errors import InvalidParameterError, RobustlabError
from robustlab.train.perturbation import Perturbation, perturbation_from


@dataclass(frozen=True)
class DegradationBin:
    """One bin: its name, the perturbations that make its images, and whether clean ones count.

    Attributes:
        name: the bin's name (a branch or a filter is chosen by it).
        perturbations: the bin's degraded members, each a degradation at levels.
        clean: whether undegraded images belong to the bin (one more member).
    """

    name: str
    perturbations: tuple[Perturbation, ...]
    clean: bool

    @property
    def members(self) -> int:
        """How many members a draw picks from (each perturbation, and clean if included)."""
        return len(self.perturbations) + int(self.clean)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images of this bin made from ``x``: each image gets one member, drawn uniformly."""
        if self.members == 1:
            return x.clone() if self.clean else self.perturbations[0].apply(x, generator)
        draw = torch.randint(self.members, (len(x),), generator=generator, device=generator.device)
        draw = draw.to(x.device)
        out = x.clone()
        for k, perturbation in enumerate(self.perturbations):
            index = (draw == k).nonzero().flatten()
            if len(index):
                out[index] = perturbation.apply(x[index], generator)
        return out

    def describe(self) -> str:
        """One line: ``jpeg: jpeg quality in 5..20 per image``."""
        parts = [p.describe() for p in self.perturbations] + (["clean"] if self.clean else [])
        return f"{self.name}: {' or '.join(parts)}"

    def spec(self) -> dict[str, Any]:
        """A JSON-able description (model cards, reports)."""
        return {
            "name": self.name,
            "degradations": [p.spec() for p in self.perturbations],
            "clean": self.clean,
        }


class DegradationBins:
    """An ordered list of bins; bin ``k`` is class ``k`` of a quality network.

    Args:
        bins: at least two bins with distinct names.

    Raises:
        InvalidParameterError: for fewer than two bins or repeated names.
    """

    def __init__(self, bins: list[DegradationBin]) -> None:
        if len(bins) < 2:
            raise InvalidParameterError(
                f"a quality network needs at least two bins to tell apart, got {len(bins)}"
            )
        names = [b.name for b in bins]
        if len(set(names)) != len(names):
            raise InvalidParameterError(f"bin names must be distinct, got {names}")
        self.bins = list(bins)

    @classmethod
    def from_spec(cls, spec: Any) -> DegradationBins:
        """Bins from their YAML form: a list of ``{name, degradations: [...], clean}``.

        ``degradations`` lists training perturbations (``{degradation, levels, ...}``, see
        :class:`~robustlab.train.perturbation.Perturbation`); ``clean`` defaults to true for a
        bin without degradations (the clean bin) and false otherwise.

        Raises:
            InvalidParameterError: naming the bin and what is wrong with it.
        """
        if not isinstance(spec, list):
            raise InvalidParameterError(
                "bins must be a list of {name, degradations, clean} mappings, e.g. "
                "[{name: clean}, {name: jpeg, degradations: [{degradation: jpeg, levels: "
                f"{{low: 5, high: 20, integer: true}}}}]}}], got {spec!r}"
            )
        bins = []
        for i, item in enumerate(spec, 1):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidParameterError(
                    f"bin {i}: each bin is a mapping with a name, got {item!r}"
                )
            unknown = set(item) - {"name", "degradations", "clean"}
            if unknown:
                raise InvalidParameterError(
                    f"bin '{item['name']}': unknown keys {sorted(unknown)}; valid: name, "
                    "degradations, clean"
                )
            raw = item.get("degradations", [])
            if not isinstance(raw, list):
                raise InvalidParameterError(
                    f"bin '{item['name']}': degradations must be a list of perturbations"
                )
            try:
                found = [perturbation_from(p) for p in raw]
            except RobustlabError as err:
                raise InvalidParameterError(f"bin '{item['name']}': {err}") from None
            perturbations = tuple(p for p in found if p is not None)
            clean = item.get("clean", not perturbations)
            if not isinstance(clean, bool):
                raise InvalidParameterError(
                    f"bin '{item['name']}': clean must be true or false, got {clean!r}"
                )
            if not perturbations and not clean:
                raise InvalidParameterError(
                    f"bin '{item['name']}' holds no images: give degradations or clean: true"
                )
            bins.append(DegradationBin(item["name"], perturbations, clean))
        return cls(bins)

    @property
    def names(self) -> list[str]:
        """The bins' names in class order."""
        return [b.name for b in self.bins]

    def __len__(self) -> int:
        return len(self.bins)

    def index(self, name: str) -> int:
        """The class index of bin ``name``.

        Raises:
            InvalidParameterError: for a name that is not a bin.
        """
        if name not in self.names:
            raise InvalidParameterError(
                f"no bin named {name!r}; the bins are {', '.join(self.names)}"
            )
        return self.names.index(name)

    def sample(
        self, x: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image of ``x`` put into a bin drawn uniformly: ``(images, bin labels)``."""
        label = torch.randint(len(self), (len(x),), generator=generator, device=generator.device)
        label = label.to(x.device)
        out = torch.empty_like(x)
        for k, item in enumerate(self.bins):
            index = (label == k).nonzero().flatten()
            if len(index):
                out[index] = item.apply(x[index], generator)
        return out, label

    def spec(self) -> list[dict[str, Any]]:
        """A JSON-able description of every bin."""
        return [b.spec() for b in self.bins]
