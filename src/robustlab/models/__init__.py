"""Model architectures and saved-model loading.

Importing this package registers every built-in architecture in :data:`MODELS`.

Example:
    >>> from robustlab.models import MODELS
    >>> "lin2022_cnn" in MODELS
    True
"""

from robustlab.models.aghdam2016 import Aghdam2016CIFAR10, Aghdam2016GTSRB, Aghdam2016MNIST
from robustlab.models.alexnet import AlexNet
from robustlab.models.base import MODELS, Normalize, check_logits, create_model
from robustlab.models.cavey import CaveyCIFAR10, CaveyMNIST
from robustlab.models.degradation_statistics import DegradationStatistics
from robustlab.models.denoisers import AdvFilter, Denoiser
from robustlab.models.external import ExternalSource, load_external_model
from robustlab.models.ghosh2018 import Ghosh2018MNIST
from robustlab.models.lin2022 import Lin2022CNN
from robustlab.models.madry import MadryMNIST
from robustlab.models.resnet import ResNet, resnet18, resnet50
from robustlab.models.store import ModelCard, load_model, save_model
from robustlab.models.vgg import VGG16

__all__ = [
    "MODELS",
    "VGG16",
    "AdvFilter",
    "Aghdam2016CIFAR10",
    "Aghdam2016GTSRB",
    "Aghdam2016MNIST",
    "AlexNet",
    "CaveyCIFAR10",
    "CaveyMNIST",
    "DegradationStatistics",
    "Denoiser",
    "ExternalSource",
    "Ghosh2018MNIST",
    "Lin2022CNN",
    "MadryMNIST",
    "ModelCard",
    "Normalize",
    "ResNet",
    "check_logits",
    "create_model",
    "load_external_model",
    "load_model",
    "resnet18",
    "resnet50",
    "save_model",
]
