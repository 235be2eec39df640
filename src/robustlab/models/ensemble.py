"""An ensemble of classifiers answering as one (aghdam2016 Section 4, "Effect of Ensemble").

:class:`Ensemble` wraps K member networks and combines their outputs per input:

- ``probability`` (default): the mean of the members' softmax probabilities. The module returns
  the log of that mean, so that ``softmax(output)`` is exactly the mean probability, ``argmax``
  is the ensemble's decision and the cross-entropy an attack maximises is the negative
  log-likelihood of the averaged prediction: differentiable, nothing masked.
- ``logit``: the mean of the members' logits.
- ``vote``: majority vote of the members' decisions, ties broken by the mean probability. The
  vote is piecewise constant in the input (its gradient is zero almost everywhere), so its
  *value* is the vote while its *gradient* is that of the members' mean log-probability (a
  straight-through surrogate): a gradient attack on a voting ensemble then pushes every member
  with the same weight, as each has one vote, instead of being stopped by a flat output; the
  differentiable surrogate the honest evaluation of a discrete decision needs (Athalye et al.
  2018's BPDA, in spirit). The mean probability is the wrong surrogate here: its gradient is
  dominated by the members already most confident in the wrong class, which have no vote
  left to give.

The output of ``vote`` is ``log(votes / K + VOTE_TIE_BREAK * r / C)`` with ``r`` the rank
(1 to ``C``) of each class's mean probability among the ``C`` classes: vote shares differ by at
least ``1 / K``, far more than the tie-break term, so its ``argmax`` is always the majority and
among tied classes the most probable. The rank, not the probability itself, breaks the tie:
two tied classes whose mean probabilities differ by 1e-5 would differ by less than float32
resolves after the log.

Members must return logits over the same classes; they are kept as given (in their own mode):
an ensemble of models in eval mode is deterministic, and a random member makes the ensemble
random (AutoAttack's check then sees it).

Example:
    >>> import torch
    >>> from torch import nn
    >>> members = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(3)]
    >>> ensemble = Ensemble(members, combine="probability")
    >>> x = torch.rand(2, 1, 2, 2)
    >>> mean = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
    >>> bool(torch.allclose(ensemble(x).softmax(dim=1), mean, atol=1e-6))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from robustlab.errors import InvalidParameterError, ModelError

#: The ways members' outputs are combined.
COMBINATIONS = ("probability", "logit", "vote")
#: Largest weight of the mean-probability rank that breaks ties between classes with equal votes.
VOTE_TIE_BREAK = 1e-3


def check_combine(combine: str) -> str:
    """``combine`` if it is one of :data:`COMBINATIONS`, else a clear error."""
    if combine not in COMBINATIONS:
        raise InvalidParameterError(
            f"combine must be one of {', '.join(COMBINATIONS)}, got {combine!r}"
        )
    return combine


class Ensemble(nn.Module):
    """K classifiers combined by mean probability, mean logit or majority vote.

    Args:
        members: the member networks (at least one), each mapping ``(N, C, H, W)`` images in
            ``[0, 1]`` to ``(N, classes)`` logits over the same classes.
        combine: ``probability`` (mean softmax; the output is its log), ``logit`` (mean
            logits) or ``vote`` (majority vote, the gradient of the mean log-probability).

    Raises:
        InvalidParameterError: for no members, a member that is not a module, or an unknown
            ``combine``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> members = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(5)]
        >>> out = Ensemble(members, combine="vote")(torch.rand(8, 1, 2, 2))
        >>> tuple(out.shape)
        (8, 3)
    """

    def __init__(self, members: Sequence[nn.Module], combine: str = "probability") -> None:
        super().__init__()
        if isinstance(members, nn.Module) or not members:
            raise InvalidParameterError(
                "members must be a non-empty list of networks, got "
                f"{type(members).__name__ if members is not None else None}"
            )
        bad = [i for i, m in enumerate(members) if not isinstance(m, nn.Module)]
        if bad:
            raise InvalidParameterError(
                f"members must be torch.nn.Module instances; member(s) {bad} are not"
            )
        self.members = nn.ModuleList(members)
        self.combine = check_combine(combine)

    @property
    def oblivious_source(self) -> nn.Module:
        """The model an attacker unaware of the ensemble attacks: its first member."""
        return self.members[0]

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits, stacked: ``(K, N, classes)``.

        Raises:
            ModelError: if members disagree on the output shape.
        """
        outputs = [member(x) for member in self.members]
        shapes = {tuple(o.shape) for o in outputs}
        if len(shapes) != 1:
            raise ModelError(
                f"ensemble members return different output shapes {sorted(shapes)}; every "
                "member must classify into the same classes"
            )
        return torch.stack(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The combined output ``(N, classes)``: log mean probability, mean logit or vote."""
        logits = self.member_logits(x)
        if self.combine == "logit":
            return logits.mean(dim=0)
        k = logits.shape[0]
        # log(mean softmax) = logsumexp over members of log_softmax, minus log K: stable.
        log_mean = torch.logsumexp(logits.log_softmax(dim=-1), dim=0) - math.log(k)
        if self.combine == "probability":
            return log_mean
        decisions = logits.argmax(dim=-1)  # (K, N)
        votes = torch.zeros_like(log_mean).scatter_add_(
            1, decisions.t(), torch.ones_like(decisions.t(), dtype=log_mean.dtype)
        )
        with torch.no_grad():
            classes = log_mean.shape[1]
            rank = log_mean.argsort(dim=1).argsort(dim=1).to(log_mean.dtype) + 1
            hard = (votes / k + VOTE_TIE_BREAK * rank / classes).log()
        # Value of the vote, gradient of the members' mean log-probability: every member
        # pulls with the same weight, as every member has one vote.
        surrogate = logits.log_softmax(dim=-1).mean(dim=0)
        return surrogate + (hard - surrogate).detach()
