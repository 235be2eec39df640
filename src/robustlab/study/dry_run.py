"""A study's degradations and defences tried on one test image before any training.

A piece whose parameters validate may still not fit the study's images: a median window or a
pixel count larger than the image, a codec that takes no such channel count. Those failed only
when their cells ran, after every model was trained. :func:`check_pieces_on_images` applies
every degradation setting and every defence to the first test image right after the data is
loaded, and refuses the study with the entry's label, its parameters and the image size.

Example:
    >>> import torch
    >>> from robustlab.study.config import parse_config
    >>> study = parse_config({"name": "s", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn"}],
    ...     "defenses": ["none", "median:size=57"]})
    >>> check_pieces_on_images(study, torch.rand(1, 1, 28, 28))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robustlab.errors.ConfigError: defense 'median' (size=57) cannot run on the study's 1x28x28 ...
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.defend import create_defense
from robustlab.degrade import create_degradation
from robustlab.errors import ConfigError, RobustlabError
from robustlab.study.config import StudyConfig


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"


def check_pieces_on_images(config: StudyConfig, images: torch.Tensor) -> None:
    """Apply every degradation setting and defence of ``config`` to ``images`` (a small batch).

    Raises:
        ConfigError: naming the entry, its parameters, the image size and the problem.
    """
    c, h, w = images.shape[1:]
    size = f"{c}x{h}x{w}"
    for degradation in config.degradations:
        for params in degradation.settings():
            try:
                create_degradation(degradation.name, **params)(
                    images, torch.Generator().manual_seed(0)
                )
            except RobustlabError as err:
                raise ConfigError(
                    f"degradation '{degradation.label}' ({_params(params)}) cannot run on the "
                    f"study's {size} images: {err}"
                ) from None
    for defense in config.defenses:
        if defense.study_denoiser is not None:
            continue  # trained by the study: its network fits the data by construction
        try:
            with torch.no_grad():
                create_defense(defense.name, **defense.params)(images)
        except RobustlabError as err:
            raise ConfigError(
                f"defense '{defense.label}' ({_params(defense.params)}) cannot run on the "
                f"study's {size} images: {err}"
            ) from None
