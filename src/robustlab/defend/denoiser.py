"""A trained denoiser as an input defence, like ``median``: ``classifier(denoiser(x))``.

huang2021's denoisers (:mod:`robustlab.models.denoisers`, trained by the ``denoise`` and
``advfilter`` strategies) are trained for one frozen classifier, but as a defence a denoiser
stands in front of any model, the same way a filter does. Two ways to name one:

- in a study, ``model: <id>`` names a denoiser entry of the same study; the study trains it
  (or takes it from the model cache) before the cells that need it, keys those cells on its
  recipe, and records beside the defence the classifier it was trained for
  (``denoiser:model=filt-e5``);
- anywhere (Python, the CLI's ``--defense``, a study), ``path:`` names a saved denoiser: a
  ``.safetensors`` file with its ``.json`` card beside it, such as a study's model-cache entry
  listed in its ``models.json``.

``head`` picks one head of a multi-head denoiser, ``output`` one decoder of an AdvFilter
(``sl`` or ``m``; default the fused output). The network is differentiable, so adaptive attacks
go through it with exact gradients.

Example:
    >>> import torch
    >>> from robustlab.models.denoisers import Denoiser
    >>> defence = DenoiserDefense(Denoiser(1, 28, width=4).eval())
    >>> x = torch.rand(2, 1, 28, 28)
    >>> defence(x).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import os

import torch
from torch import nn

from robustlab.defend.base import DEFENSES
from robustlab.errors import InvalidParameterError
from robustlab.models.denoised import apply_denoiser, check_denoiser_choice
from robustlab.tensors import checked_images


class DenoiserDefense(nn.Module):
    """A trained denoiser in front of a classifier.

    Args:
        network: the denoiser (images in, images of the same shape out).
        head: the head of a multi-head denoiser (0-based); None: its default.
        output: an AdvFilter's ``fused`` output, or one decoder's (``sl``, ``m``).
        trained_for: id of the classifier it was trained for, when known (for reports).

    Raises:
        InvalidParameterError: for a head the network lacks, or a decoder of a non-AdvFilter.
    """

    def __init__(
        self,
        network: nn.Module,
        head: int | None = None,
        output: str = "fused",
        trained_for: str | None = None,
    ) -> None:
        super().__init__()
        check_denoiser_choice(network, head, output)
        self.network = network.eval()
        self.head = head
        self.output = output
        self.trained_for = trained_for
        for p in self.network.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised images."""
        with checked_images(x, "the input of defence 'denoiser'", pixel_range=False):
            return apply_denoiser(self.network, x, self.head, self.output)

    def train(self, mode: bool = True) -> DenoiserDefense:
        """A defence is never trained: the network stays in eval mode (batch norm frozen)."""
        super().train(mode)
        self.network.eval()
        return self


def load_denoiser(path: str | os.PathLike[str]) -> nn.Module:
    """The saved denoiser at ``path`` (``.safetensors``, its ``.json`` card, or their stem).

    Raises:
        ModelError: if no model can be loaded there.
        InvalidParameterError: if the saved model is not a denoiser.
    """
    from robustlab.models import MODELS
    from robustlab.models.store import load_model, read_card

    network = load_model(path)  # refuses a folder, a missing file or weights that do not fit
    card = read_card(path)
    if "denoiser" not in MODELS.entry(card.architecture).tags:
        denoisers = [e.name for e in MODELS if "denoiser" in e.tags]
        raise InvalidParameterError(
            f"denoiser: {path} holds a {card.architecture}, not a denoiser; give the file of a "
            f"model trained as one ({', '.join(denoisers)}, strategy denoise or advfilter)"
        )
    return network


def check_denoiser_params(
    path: str | None = None,
    model: str | None = None,
    head: int | None = None,
    output: str = "fused",
) -> None:
    """Check the ``denoiser`` defence's parameters, before any file is read.

    Raises:
        InvalidParameterError: if not exactly one of ``path`` and ``model`` is given, or if
            ``head`` or ``output`` cannot be valid.
    """
    if (path is None) == (model is None):
        raise InvalidParameterError(
            "denoiser: give exactly one of path= (a saved denoiser, e.g. a path from a study's "
            "models.json) or model= (the id of a denoiser entry of the same study)"
        )
    if head is not None and (isinstance(head, bool) or not isinstance(head, int) or head < 0):
        raise InvalidParameterError(f"denoiser: head must be a 0-based integer, got {head!r}")
    if output not in ("fused", "sl", "m"):
        raise InvalidParameterError(f"denoiser: output must be fused, sl or m, got {output!r}")
    for what, value in (("path", path), ("model", model)):
        if value is not None and not isinstance(value, str | os.PathLike):
            raise InvalidParameterError(f"denoiser: {what} must be text, got {value!r}")


@DEFENSES.register("denoiser", tags=("learned",))
def denoiser_defense(
    path: str | None = None,
    model: str | None = None,
    head: int | None = None,
    output: str = "fused",
) -> DenoiserDefense:
    """A trained denoiser loaded from ``path`` (``model`` is resolved by a study only).

    Raises:
        InvalidParameterError: if neither or both of ``path`` and ``model`` are given, if
            ``model`` is used outside a study, or if the file holds no denoiser.
    """
    check_denoiser_params(path, model, head, output)
    if model is not None:
        raise InvalidParameterError(
            f"denoiser: model={model!r} names a denoiser trained by a study, which only that "
            "study can provide; outside a study give path= the denoiser's .safetensors file "
            "(listed in the study's models.json)"
        )
    assert path is not None
    return DenoiserDefense(load_denoiser(path), head=head, output=output)
