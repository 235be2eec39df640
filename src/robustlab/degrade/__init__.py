"""Degradations: batched, seeded, device-agnostic corruptions of ``[0, 1]`` image batches.

Importing this package registers every built-in degradation in :data:`DEGRADATIONS`.

Example:
    >>> from robustlab.degrade import DEGRADATIONS
    >>> "salt_pepper" in DEGRADATIONS
    True
"""

from robustlab.degrade import noise
from robustlab.degrade.base import DEGRADATIONS, Degradation, Identity, create_degradation
from robustlab.degrade.noise import GaussianNoise, SaltPepper

__all__ = [
    "DEGRADATIONS",
    "Degradation",
    "GaussianNoise",
    "Identity",
    "SaltPepper",
    "create_degradation",
    "noise",
]
