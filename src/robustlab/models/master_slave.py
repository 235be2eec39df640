"""ghosh2018's master-slave router: one branch per degradation bin, a master or confidence picks.

Section 4 of ghosh2018: a *slave* network with one branch per quality bin (branch 1 the
pretrained network for clean and mildly degraded inputs, the others fine-tuned on their bin's
images) and either

- **MS** (Eq. 2): a *master*, a quality network trained to predict each input's bin
  (:mod:`robustlab.train.strategies.quality`); the branch of its most probable bin answers;
- **AMS** (Eq. 3, "alternative"): no master; every branch answers and the most confident one
  (the highest maximum softmax probability) wins.

The output is the log-probabilities of the answering branch, so ``argmax`` is the router's
decision and an attack's cross-entropy is the answering branch's. Images of one batch may take
different branches.

**Honest gradients.** The choice of a branch is piecewise constant in the input: its gradient
is zero almost everywhere, so an attacker differentiating the hard output never learns that
moving the input could route it to a weaker branch. When gradients are needed (an attack), the
*value* stays the hard decision while the *gradient* is that of a soft relaxation, the mixture
``log sum_k w_k softmax(branch_k(x))`` with ``w`` the master's bin probabilities (MS) or a
softmax over the branches' confidences (AMS): a straight-through surrogate in the spirit of
BPDA (Athalye et al. 2018) that lets the attack push the routing and every branch at once.
Without gradients only the chosen branch runs on each image (MS), so inference costs one
master and one branch per image. A limit to know: a saturated master gives the routing a tiny
share of the gradient; where the chosen branch's own gradient points elsewhere, an L-inf sign
step follows the branch and the router can look stronger than it is. The attack studies
therefore also attack every branch alone and use a margin loss (APGD-DLR); ``autoattack``'s
Square needs no gradient at all.

Example:
    >>> import torch
    >>> from torch import nn
    >>> branches = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(2)]
    >>> master = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> router = MasterSlave(branches, master)
    >>> x = torch.rand(5, 1, 2, 2)
    >>> route = router.route(x)
    >>> expected = torch.stack([branches[int(k)](x[i : i + 1])[0] for i, k in enumerate(route)])
    >>> bool(torch.allclose(router(x), expected.log_softmax(dim=1), atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import InvalidParameterError


class MasterSlave(nn.Module):
    """Branches chosen per input by a master network (MS) or by their own confidence (AMS).

    Args:
        branches: the branch networks, branch ``k`` answering bin ``k``, each mapping
            ``(N, C, H, W)`` images in ``[0, 1]`` to ``(N, classes)`` logits.
        master: a network mapping images to one logit per branch (MS), or None (AMS).

    Raises:
        InvalidParameterError: for fewer than two branches.
    """

    def __init__(self, branches: Sequence[nn.Module], master: nn.Module | None = None) -> None:
        super().__init__()
        if len(branches) < 2:
            raise InvalidParameterError(
                f"a master-slave router needs at least two branches, got {len(branches)}"
            )
        self.branches = nn.ModuleList(branches)
        self.master = master

    @property
    def decision(self) -> str:
        """``switch`` (MS, a master chooses) or ``max_confidence`` (AMS)."""
        return "switch" if self.master is not None else "max_confidence"

    @property
    def oblivious_source(self) -> nn.Module:
        """The model an attacker unaware of the router attacks: branch 1, the base network."""
        return self.branches[0]

    def _all(self, x: torch.Tensor) -> torch.Tensor:
        """Every branch's log-probabilities, ``(N, K, classes)``."""
        return torch.stack([b(x).log_softmax(dim=1) for b in self.branches], dim=1)

    def _master_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The master's logits ``(N, K)``, checked to hold one logit per branch."""
        assert self.master is not None
        logits: torch.Tensor = self.master(x)
        if logits.ndim != 2 or logits.shape[1] != len(self.branches):
            raise InvalidParameterError(
                f"the master gives {tuple(logits.shape)} outputs for {len(self.branches)} "
                "branches; it needs one logit per branch (a quality network with one bin per "
                "branch)"
            )
        return logits

    def _weights(self, x: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        """Log-weights ``(N, K)`` of the soft decision: master probabilities or confidences."""
        if self.master is not None:
            return self._master_logits(x).log_softmax(dim=1)
        return log_probs.amax(dim=2).log_softmax(dim=1)

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """The branch that answers each image, ``(N,)`` long."""
        if self.master is not None:
            return self._master_logits(x).argmax(dim=1)
        return self._all(x).amax(dim=2).argmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the answering branch (a soft-decision gradient, see above)."""
        if not torch.is_grad_enabled():
            return self._hard(x)
        log_probs = self._all(x)
        log_weights = self._weights(x, log_probs)
        chosen = log_weights.argmax(dim=1)
        hard = log_probs[torch.arange(len(x), device=x.device), chosen]
        soft = torch.logsumexp(log_weights.unsqueeze(2) + log_probs, dim=1)
        return hard.detach() + (soft - soft.detach())

    def _hard(self, x: torch.Tensor) -> torch.Tensor:
        if self.master is None:
            log_probs = self._all(x)
            chosen = log_probs.amax(dim=2).argmax(dim=1)
            return log_probs[torch.arange(len(x), device=x.device), chosen]
        if len(x) == 0:
            return self._all(x)[:, 0]  # the branches say how many classes an empty batch has
        chosen = self.route(x)
        out: torch.Tensor | None = None
        for k, branch in enumerate(self.branches):
            index = (chosen == k).nonzero().flatten()
            if not len(index):
                continue
            answer = branch(x[index]).log_softmax(dim=1)
            if out is None:
                out = answer.new_empty((len(x), answer.shape[1]))
            out[index] = answer
        assert out is not None  # every image routes to a branch: route() checked the width
        return out
