"""Model architectures and saved-model loading.

Importing this package registers every built-in architecture in :data:`MODELS`.

Example:
    >>> from robustlab.models import MODELS
    >>> "lin2022_cnn" in MODELS
    True
"""

from robustlab.models.base import MODELS, Normalize, check_logits, create_model
from robustlab.models.lin2022 import Lin2022CNN
from robustlab.models.store import ModelCard, load_model, save_model

__all__ = [
    "MODELS",
    "Lin2022CNN",
    "ModelCard",
    "Normalize",
    "check_logits",
    "create_model",
    "load_model",
    "save_model",
]
