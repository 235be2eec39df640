"""The attack contract, its registry and the input-gradient machinery every gradient attack uses.

An attack maps a classifier (an ``nn.Module`` from pixel space ``[0, 1]`` to logits), a batch
``(N, C, H, W)`` in ``[0, 1]``, its labels and a ``torch.Generator`` to adversarial images of
the same shape inside the box ``[0, 1]``. Random attacks (a random start) take every draw from
the given generator, so the same seed gives the same adversarial batch bit for bit on CPU.

While an attack runs, the model is put in eval mode and its parameters stop requiring
gradients (gradients are taken with respect to the input only, by ``torch.autograd.grad``);
both are restored afterwards, as are the convolution weights an attack may temporarily store
in channels-last memory order (:func:`attack_mode`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.seeding import make_generator
    >>> attack = create_attack("pgd:eps=0.1,steps=5")
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> adv = attack(net, x, y, make_generator(0))
    >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), bool(adv.min() >= 0), bool(adv.max() <= 1)
    (True, True, True)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import InvalidParameterError, ModelError
from robustlab.models.base import check_logits
from robustlab.registry import Registry
from robustlab.spec import parse_spec
from robustlab.study_yaml import fraction_value
from robustlab.tensors import check_images

Norm = Literal["linf", "l2"]
NORMS: tuple[Norm, ...] = ("linf", "l2")

#: An attack objective: ``(logits (N, K), labels (N,)) -> per-sample losses (N,)``, maximised.
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, the default attack objective.

    Example:
        >>> import torch
        >>> cross_entropy_loss(torch.zeros(2, 4), torch.tensor([0, 3])).tolist() == [
        ...     torch.log(torch.tensor(4.0)).item()] * 2
        True
    """
    return F.cross_entropy(logits, y, reduction="none")


def vanishing_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Per sample: is the input gradient of the loss below the loss's floating-point resolution?

    A sample's gradient *vanishes* when its L1 norm is below the machine epsilon of its dtype
    (``torch.finfo(grad.dtype).eps``, 1.19e-7 for float32); exactly zero gradients vanish too.
    The threshold is not a tuning knob: every perturbation inside the image box has
    ``|delta_i| <= 1``, so ``||grad||_1`` is the most that *any* perturbation can change the
    loss to first order. Below machine epsilon, the whole box moves the loss by less than one
    rounding step of a loss of order 1 (a decision flips at a cross-entropy of ``log 2``). For
    the cross-entropy, ``||dL/dz||_1 = 2 (1 - p_y)`` on the logits ``z``: the gradient shrinks
    this far when the softmax saturates and ``p_y`` rounds to 1, where the true class's share
    of the gradient is lost to rounding. This is the failure AutoAttack's checks and Carlini
    et al.'s checklist warn about (a saturated softmax, huge logit scales, a model that
    returns probabilities): a margin loss on logits (CW, DLR) does not suffer from it.

    Args:
        grad: input gradients ``(N, ...)``, one sample per row.

    Returns:
        ``(N,)`` bool.

    Example:
        >>> import torch
        >>> grad = torch.tensor([[1e-3, -1e-3], [1e-9, 0.0], [0.0, 0.0]])
        >>> vanishing_gradient(grad).tolist()
        [False, True, True]
    """
    threshold = torch.finfo(grad.dtype).eps if grad.is_floating_point() else 0.0
    return grad.flatten(1).abs().sum(dim=1) < threshold


@dataclass
class AttackResult:
    """What one attack run produced.

    Attributes:
        adversarial: the adversarial batch, same shape as the input, in ``[0, 1]``.
        zero_gradient: ``(N,)`` bool, samples whose first input gradient was exactly zero (a
            gradient attack cannot move them; :mod:`robustlab.attack.sanity` flags them).
        vanishing_gradient: ``(N,)`` bool, samples whose first input gradient vanished: below
            floating-point resolution (:func:`vanishing_gradient`; includes the exactly zero
            ones). Attacks that take no gradient leave it all False.
        details: optional per-sample tensors ``(N,)`` an attack reports beside its examples
            (``autoattack``: which of its attacks fooled each sample); a study stores them
            with the cell's records.
        notes: optional JSON-ready facts about the run (``autoattack``: its attacks, whether
            it detected randomness and used EOT); a study stores them in the cell's metrics.
    """

    adversarial: torch.Tensor
    zero_gradient: torch.Tensor
    vanishing_gradient: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """Base class of all attacks.

    Subclasses implement :meth:`perturb`; :meth:`run` validates the input and prepares the model
    first. :attr:`random` tells whether the result depends on the generator.
    """

    channels_last: bool = False
    norm: str = "linf"
    #: Bumped by a subclass when a change of its code changes what it returns for the same
    #: parameters; a study's cell keys include it (when non-zero), so old results are redone.
    code_version: ClassVar[int] = 0

    @property
    def random(self) -> bool:
        """Whether the result depends on the generator (False unless a subclass says so)."""
        return False

    @abstractmethod
    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AttackResult:
        """Attack the validated batch ``x`` with labels ``y`` (model already in attack mode)."""

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Validate the batch, put ``model`` in attack mode and attack it.

        Args:
            model: the classifier (or a whole defended pipeline) returning ``(N, classes)``
                logits; restored to its former mode and parameter flags afterwards.
            x: images ``(N, C, H, W)`` in ``[0, 1]``.
            y: integer labels ``(N,)``.
            generator: the source of every random draw; required when :attr:`random` is true.

        Raises:
            InvalidParameterError: for a malformed batch, labels out of range or a missing
                generator.
            ModelError: for a model that does not return ``(N, classes)`` logits, returns NaN,
                or whose output does not depend differentiably on its input.
        """
        empty = isinstance(x, torch.Tensor) and x.ndim == 4 and len(x) == 0
        check_images(x.new_zeros((1, *x.shape[1:])) if empty else x, "attack input")
        y = check_labels(y, x)
        if self.random and generator is None:
            raise InvalidParameterError(
                f"{type(self).__name__} draws random numbers: pass a torch.Generator, e.g. "
                "robustlab.seeding.make_generator(seed, x.device)"
            )
        if len(x) == 0:
            none = torch.zeros(0, dtype=torch.bool, device=x.device)
            return AttackResult(x.clone(), none, none.clone())
        with attack_mode(model, self.channels_last) as channels_last:
            start = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            result = self.perturb(model, start.detach(), y, generator)
        result.adversarial = result.adversarial.contiguous()
        return result

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The adversarial batch of :meth:`run`."""
        return self.run(model, x, y, generator).adversarial

    def params(self) -> dict[str, Any]:
        """The parameters this instance was built with."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"


ATTACKS: Registry[Attack] = Registry("attack")


def merge_notes(total: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    """An attack's notes over batches: counts (dicts of ints) add up, other values are kept.

    A top-level value keeps the first batch's (``version``, ``eot_samples``); a boolean is
    true if it was in any batch (``random_model``).

    Example:
        >>> merge_notes({"version": "rand", "eot_samples": 20, "fooled_by": {"a": 2}},
        ...             {"version": "rand", "eot_samples": 20, "fooled_by": {"a": 1, "b": 3}})
        {'version': 'rand', 'eot_samples': 20, 'fooled_by': {'a': 3, 'b': 3}}
    """
    out = dict(total)
    for key, value in batch.items():
        if key not in out:
            out[key] = dict(value) if isinstance(value, dict) else value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            counts = dict(out[key])
            for name, count in value.items():
                counts[name] = counts.get(name, 0) + count
            out[key] = counts
        elif isinstance(value, bool):
            out[key] = bool(out[key]) or value
    return out


def create_attack(spec: str, **params: Any) -> Attack:
    """Build a registered attack from a spec (``"pgd:eps=0.3,steps=40"``) or a name + params.

    Keyword ``params`` override those of the spec. Unknown names and parameters list the valid
    ones (:class:`robustlab.errors.UnknownNameError`).
    """
    name, parsed = parse_spec(spec)
    return ATTACKS.create(name, **{**parsed, **params})


def check_norm(norm: str) -> Norm:
    """Validate a threat-model norm name (``linf`` or ``l2``, case-insensitive)."""
    value = str(norm).lower()
    if value not in NORMS:
        raise InvalidParameterError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return value  # type: ignore[return-value]


def check_eps(eps: float | str) -> float:
    """Validate a perturbation budget: a finite number ``>= 0`` (or a fraction, ``"8/255"``)."""
    try:
        eps = fraction_value(eps)
    except ValueError as err:
        raise InvalidParameterError(f"eps: {err}") from None
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        raise InvalidParameterError(f"eps must be a number >= 0, got {eps!r}")
    value = float(eps)
    if not 0.0 <= value < float("inf"):  # also rejects NaN
        raise InvalidParameterError(f"eps must be a finite number >= 0, got {eps!r}")
    return value


def check_int(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer parameter ``>= minimum`` (steps, restarts, queries, targets).

    Example:
        >>> check_int("steps", 40)
        40
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    """Validate a finite number ``> 0`` (step sizes)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidParameterError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_labels(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Validate integer labels ``(N,)`` for the batch ``x``; returns them on ``x``'s device."""
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InvalidParameterError(
            f"labels must be a 1-D tensor with one entry per image ({len(x)}), got {shape}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InvalidParameterError(f"labels must be integers, got {y.dtype}; use y.long()")
    return y.to(device=x.device, dtype=torch.int64)


def check_output(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Check the model's output for the batch labelled ``y``: shape, NaN and label range."""
    if not isinstance(logits, torch.Tensor):
        raise ModelError(
            f"the model returned {type(logits).__name__}; robustlab needs a logits tensor"
        )
    batch = len(y)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ModelError(
            f"the model returned a tensor of shape {tuple(logits.shape)} for a batch of {batch} "
            f"images; robustlab needs logits of shape ({batch}, classes), one row per image "
            "and one column per class"
        )
    classes = logits.shape[1]
    check_logits(logits, batch, classes)
    if batch and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise InvalidParameterError(
            f"labels must lie in [0, {classes - 1}] for a model with {classes} outputs, found "
            f"values in [{int(y.min())}, {int(y.max())}]"
        )
    return logits


def loss_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFunction | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-sample loss with respect to the input only, and the logits.

    The loss is summed, not averaged, so each sample's gradient does not depend on the batch
    it is in. A model with a ``loss_gradient(x, y, loss)`` method (an EOT estimator,
    :class:`robustlab.attack.adaptive.EOT`) computes the gradient itself.

    Args:
        model: the classifier (or defended pipeline) in attack mode.
        x: the current iterate ``(N, C, H, W)``.
        y: labels ``(N,)``.
        loss: the objective (:data:`LossFunction`); the cross-entropy when None.

    Raises:
        ModelError: for bad logits, a NaN gradient, or a model whose output does not depend
            differentiably on its input.
    """
    objective = cross_entropy_loss if loss is None else loss
    estimator = getattr(model, "loss_gradient", None)
    if callable(estimator):
        grad, logits = estimator(x, y, objective)
        return grad, logits
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        logits = check_output(model(leaf), y)
        total = objective(logits, y).sum()
        grad = (
            torch.autograd.grad(total, leaf, allow_unused=True)[0] if total.requires_grad else None
        )
    if grad is None:
        raise ModelError(
            "the model's output does not depend differentiably on its input (a "
            "non-differentiable step such as the jpeg defence, or a detach()); attack it "
            "through robustlab.attack.adaptive.bpda, which gives it a backward pass"
        )
    if torch.isnan(grad).any():
        raise ModelError("the input gradient holds NaN values; check the model and its input")
    return grad, logits.detach()


@contextmanager
def attack_mode(model: nn.Module, channels_last: bool = False) -> Iterator[bool]:
    """Eval mode and frozen parameters for the duration of an attack, restored afterwards.

    With ``channels_last``, 4-D parameters (convolution weights) are stored in channels-last
    order meanwhile: oneDNN then runs the convolutions and their input gradients in NHWC,
    which is much faster on CPU (``benchmarks/bench_pgd.py``). The values do not change; the
    original tensors are put back on exit.

    Yields:
        Whether the channels-last layout is in use (the model has convolution weights).
    """
    training = [(m, m.training) for m in model.modules()]
    parameters = list(model.parameters())
    flags = [p.requires_grad for p in parameters]
    swapped: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        model.eval()
        for p in parameters:
            p.requires_grad_(False)
        use = channels_last and any(p.ndim == 4 for p in parameters)
        if use:
            for p in parameters:
                if p.ndim == 4:
                    swapped.append((p, p.data))
                    # .to() also restrides ambiguous shapes (one input channel), which
                    # .contiguous() leaves alone; oneDNN then keeps every layer in NHWC.
                    p.data = p.data.to(memory_format=torch.channels_last)
        yield use
    finally:
        for p, data in swapped:
            p.data = data
        for p, flag in zip(parameters, flags, strict=True):
            p.requires_grad_(flag)
        for module, flag in training:
            module.training = flag
