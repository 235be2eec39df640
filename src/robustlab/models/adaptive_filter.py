"""Adaptive filter selection: a detector recognises each input's degradation, its filter cleans it.

lin2022 find that the best filter depends on the noise (a median for impulse noise, nothing for
a clean image, where every filter costs accuracy) and leave choosing it automatically to future
work. :class:`AdaptiveFilter` does it per image: a *detector*, a quality network whose bins are
kinds of degradation (:mod:`robustlab.train.strategies.quality`), names each image's kind, and
the filter mapped to that kind is applied before the classifier. Images of one batch may take
different filters; each filter runs once on the images that chose it.

**Honest gradients.** The detector's choice is piecewise constant in the input, and some
filters (JPEG) have no useful gradient. When gradients are needed (an attack), the *value* is
the hard pipeline while the *gradient* is that of a soft relaxation: the filtered images mixed
with the detector's probabilities, each filter differentiated exactly where it is
differentiable and by BPDA's identity where it is not (its ``differentiable`` attribute is
false). The attack then sees how moving the input changes both the chosen filter and the
classifier's answer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.defend import create_defense
    >>> detector = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> filters = [create_defense("none"), create_defense("median", size=3)]
    >>> pipeline = AdaptiveFilter(detector, classifier, filters)
    >>> x = torch.rand(4, 1, 4, 4)
    >>> kind = pipeline.route(x)
    >>> cleaned = torch.stack([filters[int(k)](x[i : i + 1])[0] for i, k in enumerate(kind)])
    >>> bool(torch.allclose(pipeline(x), classifier(cleaned), atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import InvalidParameterError


def _through(defense: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``defense(x)``, with BPDA's identity gradient when the defence is not differentiable."""
    if getattr(defense, "differentiable", True):
        return defense(x)  # type: ignore[no-any-return]
    with torch.no_grad():
        out = defense(x.detach())
    through: torch.Tensor = x + (out - x).detach()
    return through


class AdaptiveFilter(nn.Module):
    """A detector picks, per image, the filter in front of a classifier.

    Args:
        detector: maps images to one logit per kind (filter ``k`` serves kind ``k``).
        classifier: the classifier behind the filters (logits out).
        filters: input defences, one per kind of the detector.

    Raises:
        InvalidParameterError: for no filters.
    """

    def __init__(
        self, detector: nn.Module, classifier: nn.Module, filters: Sequence[nn.Module]
    ) -> None:
        super().__init__()
        if not filters:
            raise InvalidParameterError("an adaptive filter needs at least one filter")
        self.detector = detector
        self.classifier = classifier
        self.filters = nn.ModuleList(filters)

    @property
    def oblivious_source(self) -> nn.Module:
        """The model an attacker unaware of the filters attacks: the bare classifier."""
        return self.classifier

    def _detector_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The detector's logits ``(N, kinds)``, checked to hold one kind per filter."""
        logits: torch.Tensor = self.detector(x)
        if logits.ndim != 2 or logits.shape[1] != len(self.filters):
            raise InvalidParameterError(
                f"the detector gives {tuple(logits.shape)} outputs for {len(self.filters)} "
                "filters; map one filter to every kind"
            )
        return logits

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """The kind (filter index) chosen for each image, ``(N,)`` long."""
        return self._detector_logits(x).argmax(dim=1)

    @torch.no_grad()
    def clean(self, x: torch.Tensor) -> torch.Tensor:
        """Every image through the filter of its detected kind (each filter runs once)."""
        chosen = self.route(x)
        out = x.clone()
        for k, defense in enumerate(self.filters):
            index = (chosen == k).nonzero().flatten()
            if len(index):
                out[index] = defense(x[index])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits on the filtered images (a soft-choice gradient, see above)."""
        if not torch.is_grad_enabled():
            return self.classifier(self.clean(x))  # type: ignore[no-any-return]
        weights = self._detector_logits(x).softmax(dim=1)
        filtered = torch.stack([_through(f, x) for f in self.filters], dim=1)
        chosen = weights.argmax(dim=1)
        hard = filtered[torch.arange(len(x), device=x.device), chosen]
        soft = (weights.view(*weights.shape, 1, 1, 1) * filtered).sum(dim=1)
        return self.classifier(hard.detach() + (soft - soft.detach()))  # type: ignore[no-any-return]
