"""Adversarial perturbations: searches for the smallest input change that fools a classifier.

Importing this package registers every attack in :data:`ATTACKS`: the gradient attacks
``fgsm`` and ``pgd``, ``apgd`` (APGD-CE / DLR / targeted), the score-based ``square``, the
minimum-norm attacks ``fab``, ``fmn``, ``ga`` and ``szegedy``, and the ``autoattack`` ensemble;
:mod:`robustlab.attack.adaptive` attacks defended pipelines (BPDA, EOT) and
:mod:`robustlab.attack.sanity` flags evaluations that look broken.

Example:
    >>> from robustlab.attack import ATTACKS, METHODS
    >>> METHODS
    ('ga', 'szegedy')
    >>> ATTACKS.names()
    ['apgd', 'autoattack', 'fab', 'fgsm', 'fmn', 'ga', 'pgd', 'square', 'szegedy']
"""

from robustlab.attack.apgd import APGD
from robustlab.attack.autoattack import AutoAttack
from robustlab.attack.base import ATTACKS, Attack, AttackResult, create_attack
from robustlab.attack.fab import FAB
from robustlab.attack.fmn import FMN
from robustlab.attack.gradient import FGSM, PGD
from robustlab.attack.grids import GRIDS, named_grid
from robustlab.attack.minimal_noise import (
    METHODS,
    GeneticParams,
    MinimalNoiseResult,
    SzegedyParams,
    minimal_noise_search,
)
from robustlab.attack.minimal_noise_attacks import GeneticMinimalNoise, SzegedyMinimalNoise
from robustlab.attack.minimum_norm import MinimumNormAttack, robust_accuracy_curve
from robustlab.attack.square import Square

__all__ = [
    "APGD",
    "ATTACKS",
    "FAB",
    "FGSM",
    "FMN",
    "GRIDS",
    "METHODS",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "GeneticMinimalNoise",
    "GeneticParams",
    "MinimalNoiseResult",
    "MinimumNormAttack",
    "Square",
    "SzegedyMinimalNoise",
    "SzegedyParams",
    "create_attack",
    "minimal_noise_search",
    "named_grid",
    "robust_accuracy_curve",
]
