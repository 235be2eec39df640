"""Building a study's input defences, including the denoisers the study trains itself.

A registered defence is built from its name and parameters (:func:`create_defense`). A trained
denoiser of the study (``denoiser:model=<id>``) is an artefact of the study's graph: it is
provided (trained, or taken from the model cache) by the run's artefact provider the first
time a cell needs it, then shared by every cell and part, as a composite's members are.

Example:
    >>> from robustlab.study.plan import DefenseSetting
    >>> build_defense(DefenseSetting("median", "median", {"size": 3}), None)
    MedianFilter(size=3)
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from robustlab.defend import DenoiserDefense, create_defense
from robustlab.study.plan import DefenseSetting, PlannedModel


class ModelProvider(Protocol):
    """What serves a study's trained artefacts (an :class:`ArtefactProvider`)."""

    def provide(self, planned: PlannedModel) -> nn.Module:
        """The artefact ``planned``, trained or taken from the cache, in eval mode."""
        ...


def build_defense(setting: DefenseSetting, provider: ModelProvider | None) -> nn.Module:
    """The defence of ``setting``, in eval mode; a study's denoiser comes from ``provider``.

    Raises:
        ValueError: for a study's denoiser without a provider (a programming error).
    """
    if setting.artefact is None:
        return create_defense(setting.name, **setting.params).eval()
    if provider is None:
        raise ValueError(f"defence {setting.label} runs a trained model: it needs a provider")
    network = provider.provide(setting.artefact)
    return DenoiserDefense(
        network,
        head=setting.params.get("head"),
        output=str(setting.params.get("output", "fused")),
        trained_for=setting.trained_for,
    )


def probe_defense(setting: DefenseSetting) -> nn.Module:
    """A stand-in with the defence's behaviour under attack, built without training anything.

    A study's denoiser is a differentiable network: an identity denoiser stands for it when
    only the attack method (exact gradients, BPDA, EOT) is asked.
    """
    if setting.artefact is None:
        return create_defense(setting.name, **setting.params)
    return DenoiserDefense(nn.Identity())
