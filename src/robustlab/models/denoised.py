"""A classifier behind a trained denoiser: ``classifier(denoiser(x))``, one differentiable model.

huang2021 put a learned denoiser in front of a frozen classifier (Eq. 3). As a model of a
study (the ``denoised`` composite, :mod:`robustlab.study.composites`) it is scored by every
part like any classifier. Attacks see it two ways: *adaptive*, white-box through denoiser and
classifier together (both are differentiable networks, so the gradient is exact); *oblivious*
(:attr:`Denoised.oblivious_source`), examples made against the classifier alone and then
denoised, which is huang2021's protocol when the classifier is the one the denoiser was
trained for.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.models.denoisers import Denoiser
    >>> classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    >>> model = Denoised(Denoiser(1, 28, width=4), classifier)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> bool(torch.allclose(model(x), classifier(model.denoise(x))))
    True
    >>> model.oblivious_source is classifier
    True
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import InvalidParameterError


class Denoised(nn.Module):
    """``classifier(denoiser(x))``.

    Args:
        denoiser: maps images ``(N, C, H, W)`` in ``[0, 1]`` to images of the same shape.
        classifier: the classifier behind it (logits out).
        head: for a multi-head denoiser, the head to use (0-based); None: its default.
        output: for an AdvFilter, ``fused`` (Eq. 12, default), or one decoder alone: ``sl``
            or ``m`` (huang2021 Table 4's PA-Filt_sl and PA-Filt_m rows).

    Raises:
        InvalidParameterError: for a head the denoiser does not have, or a decoder output of
            a network that is not an AdvFilter.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        classifier: nn.Module,
        head: int | None = None,
        output: str = "fused",
    ) -> None:
        super().__init__()
        check_denoiser_choice(denoiser, head, output)
        self.denoiser = denoiser
        self.classifier = classifier
        self.head = head
        self.output = output

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised images."""
        return apply_denoiser(self.denoiser, x, self.head, self.output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits for the denoised images."""
        logits: torch.Tensor = self.classifier(self.denoise(x))
        return logits

    @property
    def oblivious_source(self) -> nn.Module:
        """What an attacker unaware of the denoiser attacks: the classifier alone."""
        return self.classifier


def check_denoiser_choice(denoiser: nn.Module, head: int | None, output: str) -> None:
    """Refuse a head the denoiser does not have, or a decoder output of a non-AdvFilter.

    Raises:
        InvalidParameterError: naming the heads there are, or the network's class.
    """
    if head is not None:
        heads = getattr(denoiser, "num_heads", None)
        if heads is None or not 0 <= head < int(heads):
            raise InvalidParameterError(
                f"head {head} does not exist: {type(denoiser).__name__} has "
                + ("no heads to choose from" if heads is None else f"heads 0..{heads - 1}")
            )
    if output not in ("fused", "sl", "m"):
        raise InvalidParameterError(f"output must be fused, sl or m, got {output!r}")
    if output != "fused" and not isinstance(getattr(denoiser, "ynet", None), nn.Module):
        raise InvalidParameterError(
            f"output {output!r} picks one decoder of an AdvFilter; "
            f"{type(denoiser).__name__} has none"
        )


def apply_denoiser(
    denoiser: nn.Module, x: torch.Tensor, head: int | None = None, output: str = "fused"
) -> torch.Tensor:
    """``denoiser(x)`` through the chosen head or AdvFilter output (see :class:`Denoised`).

    Raises:
        InvalidParameterError: if the denoiser changes the images' shape.
    """
    if output != "fused":
        ynet: nn.Module = denoiser.ynet  # type: ignore[assignment]
        decoded = ynet(x)
        out: torch.Tensor = decoded.denoised_sl if output == "sl" else decoded.denoised_m
    else:
        out = denoiser(x) if head is None else denoiser(x, head=head)
    if out.shape != x.shape:
        raise InvalidParameterError(
            f"the denoiser returned {tuple(out.shape)} for images {tuple(x.shape)}; a "
            "denoiser must return images of its input's shape"
        )
    return out
