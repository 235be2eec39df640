"""``stability``: stability training (Zheng et al. 2016), ghosh2018's "ST" row of Table 1.

Zheng, Song, Leung and Goodfellow, "Improving the robustness of deep neural networks via
stability training" (CVPR 2016), cited by ghosh2018 (Section 2, and Section 5.2 / Table 1, row
"ST[8]": "Gaussian noise is added to the training samples. The cost function has a factor that
tries to minimize the distance between the clean and degraded image features"), train on the
clean image ``x`` and a perturbed copy ``x' = clip(x + N(0, sigma^2), 0, 1)`` with

    L = CE(f(x), y) + alpha * KL(P(y|x) || P(y|x')),

the task loss on the clean image only and a stability term that pulls the output on the copy
towards the output on the clean image. Defaults: ``alpha = 0.01``, ``sigma = 0.04`` (pixels
in ``[0, 1]``), Zheng's values as we recall them: Zheng's paper is not in the project's paper
set, so they are not checked against its text. ghosh2018 fine-tune a pretrained network with it
(``from_parent: true``, the parent model is the start); ``from_parent: false`` trains from
scratch.

Decisions where the papers leave room:

- Gradient flows through *both* branches, ``P(y|x)`` and ``P(y|x')``: Zheng's two branches are
  one network with shared weights and they back-propagate through both; ``P(y|x)`` is not
  treated as a fixed target.
- The stability term is the KL divergence ``sum_j p_j log(p_j / q_j)``, averaged over the
  batch. Zheng call it KL but (as we recall) write the cross-entropy ``-sum_j p_j log q_j``: the KL
  plus the entropy of ``P(y|x)``; with the gradient through ``P(y|x)`` the two differ (the
  cross-entropy form also rewards confident clean outputs). We use the true KL, which is 0
  exactly when the two outputs agree.
- Both copies go through the network in one forward pass (``[x; x']``), so a batch-norm layer
  in training mode normalises them with the statistics of the ``2B`` images.
- ``context.images`` counts ``2B``: the network is run and trained on both copies. With
  ``alpha: 0`` the copy is not made and ``B`` images are counted (plain cross-entropy).
- The noise is drawn from ``context.generator`` as one ``torch.randn`` of the batch's shape.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.train.strategy import StepContext
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> context = StepContext(epoch=0, total_epochs=1, generator=torch.Generator(), num_classes=3)
    >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    >>> loss = Stability(alpha=0.1).loss(model, x, y, context)
    >>> loss.ndim, context.images  # 2 clean images and their 2 noisy copies
    (0, 4)
    >>> Stability().parent_role, Stability(from_parent=True).parent_role
    (None, 'start')
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models.base import check_logits
from robustlab.train.strategy import STRATEGIES, StepContext, Strategy, cross_entropy


@STRATEGIES.register("stability", tags=("zheng2016", "ghosh2018"))
class Stability(Strategy):
    """Stability training: clean cross-entropy plus ``alpha`` x KL(clean || Gaussian-noisy copy).

    Args:
        alpha: weight of the stability term (Zheng: 0.01); 0 is plain cross-entropy.
        sigma: standard deviation of the additive Gaussian noise, pixels in ``[0, 1]``
            (Zheng: 0.04).
        from_parent: start from a trained parent model (ghosh2018 fine-tune a pretrained
            network) instead of training from scratch.

    Raises:
        InvalidParameterError: for a negative or non-finite ``alpha``, a ``sigma`` that is not
            positive and finite, or a non-boolean ``from_parent``.
    """

    def __init__(self, alpha: float = 0.01, sigma: float = 0.04, from_parent: bool = False) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise InvalidParameterError(f"stability: alpha must be a number, got {alpha!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise InvalidParameterError(
                f"stability: alpha must be finite and >= 0 (Zheng: 0.01), got {alpha}"
            )
        if isinstance(sigma, bool) or not isinstance(sigma, int | float):
            raise InvalidParameterError(f"stability: sigma must be a number, got {sigma!r}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise InvalidParameterError(
                f"stability: sigma must be finite and > 0 (Zheng: 0.04; for no noise use "
                f"the standard strategy), got {sigma}"
            )
        if not isinstance(from_parent, bool):
            raise InvalidParameterError(
                f"stability: from_parent must be true or false, got {from_parent!r}"
            )
        self.alpha = float(alpha)
        self.sigma = float(sigma)
        self.from_parent = from_parent
        # Per instance: the parameter decides whether a parent model is the start.
        self.parent_role = "start" if from_parent else None

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """``CE(f(x), y) + alpha * KL(P(y|x) || P(y|x'))``, gradient through both branches."""
        if self.alpha == 0:
            return cross_entropy(model, x, y, context)
        noise = torch.randn(x.shape, generator=context.generator, device=x.device, dtype=x.dtype)
        noisy = (x + self.sigma * noise).clamp(0.0, 1.0)
        logits = model(torch.cat([x, noisy]))
        if context.images == 0:
            check_logits(logits, 2 * len(y), context.num_classes)
        context.images += 2 * len(y)
        clean_logits, noisy_logits = logits.split(len(y))
        log_p = F.log_softmax(clean_logits, dim=1)
        log_q = F.log_softmax(noisy_logits, dim=1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
        return F.cross_entropy(clean_logits, y) + self.alpha * kl
