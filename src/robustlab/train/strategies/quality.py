"""``quality``: train a quality network that tells which degradation bin an input belongs to.

ghosh2018's master (Section 4.1) is "a small CNN [trained] to predict the quality of the input
image"; its classes are quality *bins*, sets of degradation settings
(:mod:`robustlab.train.bins`). This strategy trains any registered architecture for it: each
training image is put into a bin drawn uniformly (degraded by one of the bin's members, or left
clean for a bin that holds clean images) and the network learns the bin's index with
cross-entropy; the digit labels are not used. The last ``nn.Linear`` layer is resized to the
number of bins (:meth:`Quality.adapt`), so any classifier architecture becomes a quality
network, and ``ghosh2018_quality`` is the paper's three-convolution, three-FC master.

The artefact is of kind ``quality``: it is not scored as a classifier of the dataset; its model
card reports *bin* accuracy, on the first :data:`SCORE_IMAGES` images of a split, each put into
a bin with a fixed generator. The master-slave router (``master_slave``) and the adaptive
filter (``adaptive_filter``) are built on it.

Example:
    >>> import torch
    >>> from robustlab.models import create_model
    >>> from robustlab.train.strategy import StepContext
    >>> noisy = {"degradation": "gaussian_noise", "levels": [0.3]}
    >>> strategy = Quality([{"name": "clean"}, {"name": "noisy", "degradations": [noisy]}])
    >>> net = strategy.adapt(create_model("lin2022_cnn"))
    >>> net(torch.rand(1, 1, 28, 28)).shape  # one logit per bin
    torch.Size([1, 2])
    >>> context = StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=2)
    >>> x, y = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    >>> loss = strategy.loss(net, x, y, context)
    >>> loss.ndim, context.images
    (0, 4)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models.base import check_logits
from robustlab.seeding import make_generator
from robustlab.train.bins import DegradationBins
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy

#: Images a quality network's card accuracy is measured on (per split), to keep codecs cheap.
SCORE_IMAGES = 2000


def _replace_last_linear(model: nn.Module, outputs: int) -> nn.Module:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise InvalidParameterError(
            f"quality: {type(model).__name__} has no nn.Linear output layer to resize to the "
            "number of bins; use an architecture that ends in one (e.g. ghosh2018_quality)"
        )
    name, last = found[-1]
    if last.out_features == outputs:
        return model
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(owner, name.rpartition(".")[2], nn.Linear(last.in_features, outputs))
    return model


@STRATEGIES.register("quality", tags=("ghosh2018", "quality"))
class Quality(Strategy):
    """Train a quality network on the images of ``bins`` (ghosh2018's master).

    Args:
        bins: the bins in class order, ``[{name, degradations: [...], clean}, ...]``
            (:meth:`~robustlab.train.bins.DegradationBins.from_spec`).

    Raises:
        InvalidParameterError: for fewer than two bins or a malformed bin.
    """

    kind: ClassVar[str] = "quality"

    def __init__(self, bins: list[dict[str, Any]]) -> None:
        self.bins = DegradationBins.from_spec(bins)

    def outputs(self, num_classes: int) -> int:
        """One logit per bin, whatever the dataset's classes."""
        return len(self.bins)

    def adapt(self, model: nn.Module) -> nn.Module:
        """The network with its last ``nn.Linear`` resized to the number of bins."""
        return _replace_last_linear(model, len(self.bins))

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """Cross-entropy of the bin of every image, each put into a bin drawn uniformly."""
        degraded, label = self.bins.sample(x, context.generator)
        logits = model(degraded)
        if context.images == 0:
            check_logits(logits, len(x), len(self.bins))
        context.images += len(x)
        return F.cross_entropy(logits, label)

    @torch.no_grad()
    def score(self, model: nn.Module, split: Any) -> float:
        """Bin accuracy on the first :data:`SCORE_IMAGES` images of ``split`` (fixed draw)."""
        model.eval()
        device = next(model.parameters()).device
        generator = make_generator(0, device)
        correct = total = 0
        for x, _ in split.batches(500, device):
            x = x[: SCORE_IMAGES - total]
            degraded, label = self.bins.sample(x, generator)
            correct += int((model(degraded).argmax(dim=1) == label).sum())
            total += len(x)
            if total >= SCORE_IMAGES:
                break
        return correct / max(total, 1)

    def describe(self) -> str:
        """One line: the bins."""
        return "quality bins: " + "; ".join(b.describe() for b in self.bins.bins)
