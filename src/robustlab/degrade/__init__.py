"""Degradations: batched, seeded, device-agnostic corruptions of ``[0, 1]`` image batches.

Importing this package registers every built-in degradation in :data:`DEGRADATIONS`, and
:data:`SUITES` holds the published severity grids (CIFAR-10-C, ImageNet-C, each paper's own).

Example:
    >>> from robustlab.degrade import DEGRADATIONS
    >>> "salt_pepper" in DEGRADATIONS
    True
"""

from robustlab.degrade import blur, codecs, compose, mixture, noise, pixels, suites
from robustlab.degrade.base import DEGRADATIONS, Degradation, Identity, create_degradation
from robustlab.degrade.blur import GaussianBlur
from robustlab.degrade.codecs import JPEG, JPEG2000
from robustlab.degrade.compose import Compose
from robustlab.degrade.mixture import OneOf
from robustlab.degrade.noise import (
    GaussianNoise,
    GaussianNoise255,
    GaussianNoiseVariance,
    SaltPepper,
)
from robustlab.degrade.pixels import DeadPixels, HotPixels, StuckPixels
from robustlab.degrade.suites import SUITES, SuiteEntry, expand_suite

__all__ = [
    "DEGRADATIONS",
    "JPEG",
    "JPEG2000",
    "SUITES",
    "Compose",
    "DeadPixels",
    "Degradation",
    "GaussianBlur",
    "GaussianNoise",
    "GaussianNoise255",
    "GaussianNoiseVariance",
    "HotPixels",
    "Identity",
    "OneOf",
    "SaltPepper",
    "StuckPixels",
    "SuiteEntry",
    "blur",
    "codecs",
    "compose",
    "create_degradation",
    "expand_suite",
    "mixture",
    "noise",
    "pixels",
    "suites",
]
