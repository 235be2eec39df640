"""robustlab: measure and improve how well image classifiers survive degraded and attacked inputs.

The Python API in one screen:

- :func:`evaluate` evaluates an ``nn.Module`` you hold (a notebook's model) under degradations,
  attacks and defences, with no YAML file: ``evaluate(model, data=..., attacks=[...])``;
- :func:`run_study` runs a YAML study (or a built-in one) and writes results and report;
- :func:`load_model` loads a saved model (pixel-space input in ``[0, 1]``, logits out);
- :func:`load_dataset`, :func:`create_degradation`, :func:`create_defense`,
  :func:`create_model`, :func:`create_strategy` build the pieces by name; ``robustlab list``
  shows them all;
- :class:`TrainingRecipe` and :class:`ModelCache` train a model with any strategy (cached).

Example:
    >>> import torch, robustlab
    >>> noisy = robustlab.create_degradation("salt_pepper", amount=0.2)(
    ...     torch.rand(2, 1, 28, 28), torch.Generator().manual_seed(0))
    >>> robustlab.create_defense("median", size=3)(noisy).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

__version__ = "0.2.0"

from typing import TYPE_CHECKING

from robustlab.lazy_names import lazy_names

if TYPE_CHECKING:
    from robustlab.data.datasets import load_dataset
    from robustlab.defend import create_defense, defended
    from robustlab.degrade import create_degradation
    from robustlab.evaluation import evaluate
    from robustlab.models import create_model, load_model
    from robustlab.study.runner import run_study
    from robustlab.train.cache import ModelCache
    from robustlab.train.loop import TrainingRecipe
    from robustlab.train.strategy import create_strategy

# The public names are imported on first use (PEP 562), so that `import robustlab.<module>`
# loads only what that module needs: a Ray worker or the command line's `--help` does not pay
# for SciPy's statistics, matplotlib and every registry (about 1.5 s of a 3.4 s import).
_LAZY = {
    "ModelCache": "robustlab.train.cache",
    "TrainingRecipe": "robustlab.train.loop",
    "create_defense": "robustlab.defend",
    "create_degradation": "robustlab.degrade",
    "create_model": "robustlab.models",
    "create_strategy": "robustlab.train.strategy",
    "defended": "robustlab.defend",
    "evaluate": "robustlab.evaluation",
    "load_dataset": "robustlab.data.datasets",
    "load_model": "robustlab.models",
    "run_study": "robustlab.study.runner",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "ModelCache",
    "TrainingRecipe",
    "__version__",
    "create_defense",
    "create_degradation",
    "create_model",
    "create_strategy",
    "defended",
    "evaluate",
    "load_dataset",
    "load_model",
    "run_study",
]
