"""Adversarial perturbations: searches for the smallest input change that fools a classifier.

Importing this package registers the gradient attacks in :data:`ATTACKS` (``fgsm``, ``pgd``);
:mod:`robustlab.attack.adaptive` attacks defended pipelines (BPDA, EOT) and
:mod:`robustlab.attack.sanity` flags evaluations that look broken.

Example:
    >>> from robustlab.attack import ATTACKS, METHODS
    >>> METHODS
    ('ga', 'szegedy')
    >>> ATTACKS.names()
    ['fgsm', 'pgd']
"""

from robustlab.attack.base import ATTACKS, Attack, AttackResult, create_attack
from robustlab.attack.gradient import FGSM, PGD
from robustlab.attack.grids import GRIDS, named_grid
from robustlab.attack.minimal_noise import (
    METHODS,
    GeneticParams,
    MinimalNoiseResult,
    SzegedyParams,
    minimal_noise_search,
)

__all__ = [
    "ATTACKS",
    "FGSM",
    "GRIDS",
    "METHODS",
    "PGD",
    "Attack",
    "AttackResult",
    "GeneticParams",
    "MinimalNoiseResult",
    "SzegedyParams",
    "create_attack",
    "minimal_noise_search",
    "named_grid",
]
