"""Input defences placed in front of a classifier.

Importing this package registers every built-in defence in :data:`DEFENSES`.

Example:
    >>> from robustlab.defend import DEFENSES
    >>> DEFENSES.names()
    ['box', 'denoiser', 'gaussian', 'jpeg', 'median', 'none']
"""

from robustlab.defend.base import DEFENSES, NoDefense, create_defense, defended
from robustlab.defend.codec import JPEGDefense
from robustlab.defend.denoiser import DenoiserDefense
from robustlab.defend.filters import BoxFilter, GaussianFilter, MedianFilter

__all__ = [
    "DEFENSES",
    "BoxFilter",
    "DenoiserDefense",
    "GaussianFilter",
    "JPEGDefense",
    "MedianFilter",
    "NoDefense",
    "create_defense",
    "defended",
]
