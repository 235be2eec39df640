"""Training: the deterministic loop, checkpoints and the trained-model cache.

Example:
    >>> from robustlab.train import ModelCache, TrainingRecipe
    >>> TrainingRecipe(architecture="lin2022_cnn", dataset="mnist").epochs
    10
"""

from robustlab.train.cache import CachedModel, ModelCache
from robustlab.train.loop import TrainingRecipe, evaluate_accuracy, train_epochs

__all__ = ["CachedModel", "ModelCache", "TrainingRecipe", "evaluate_accuracy", "train_epochs"]
