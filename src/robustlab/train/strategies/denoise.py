"""``denoise``: train a pixel denoiser in front of a frozen classifier (huang2021 Secs. 3.2-3.4).

The trained artefact is a denoiser (kind ``denoiser``): an architecture such as
``huang2021_denoiser`` (:class:`~robustlab.models.denoisers.Denoiser`, additive or filtering,
one head or several) built fresh, whose parent, role ``classifier``, is the frozen classifier
it protects. Its training set is the classifier's adversarial examples
(:mod:`robustlab.train.adversarial_examples`): by default PGD with 40 iterations of ``eps /
30`` from a random start (Foolbox's ``LinfPGD``, which huang2021 used) at the twelve strengths
``{1, 3, 5} x 10^-m``, ``m = 1..4``, generated once per classifier and shared by every denoiser
of it. Each step takes a batch of adversarial examples, denoises them and compares with the
clean images:

- ``loss: image``: Eq. 4, the mean absolute difference of clean and denoised pixels;
- ``loss: semantic``: Eq. 5, the mean absolute difference of the classifier's ``layer``
  outputs (a module name of the classifier, ``""`` for its logits) on clean and denoised
  images.

``strengths`` picks the strengths trained on (huang2021's ``Filt(L*_img)`` uses the three
largest). ``head_strengths`` trains the multi-head denoiser of Sec. 3.4: one list of strengths
per head, each head updated only on examples of its strengths (the U-Net on all).

``perturbation`` trains the same network on a natural degradation instead (a training
perturbation as the other strategies take it, :mod:`robustlab.train.perturbation`): each clean
training image is degraded afresh by the strategy's generator and the denoiser learns to undo
it, so a learned denoiser can be compared with the median and box filters on a study's noise.

The model card's accuracy is the classifier's top-1 accuracy on clean images behind the
denoiser (its first head when it has several and no ``default_head``).

Example:
    >>> strategy = Denoise(strengths=[0.1, 0.3, 0.5], attack="pgd:steps=40")
    >>> strategy.kind, strategy.parent_role, strategy.describe()
    ('denoiser', 'classifier', 'denoise(image, strengths 0.1/0.3/0.5, pgd:steps=40)')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from robustlab.data.base import SplitLike
from robustlab.errors import InvalidParameterError
from robustlab.models.denoisers import EPSILONS_ALL, Denoiser, image_loss, semantic_loss
from robustlab.train.adversarial_examples import AdversarialExamples, ExampleSpec
from robustlab.train.perturbation import Perturbation, perturbation_from
from robustlab.train.strategy import STRATEGIES, FrozenParent, StepContext, Strategy

#: Foolbox's LinfPGD (huang2021's attack): 40 steps of eps / 30 from a random start.
DEFAULT_ATTACK = "pgd:rel_step_size=0.0333333,steps=40"


def check_strengths(name: str, strengths: Sequence[Any]) -> tuple[float, ...]:
    """``strengths`` as distinct floats in ``(0, 1]``, or a clear error naming ``name``."""
    try:
        values = tuple(float(s) for s in strengths)
    except (TypeError, ValueError):
        values = ()
    if not values or any(not 0 < v <= 1 for v in values) or len(set(values)) != len(values):
        raise InvalidParameterError(
            f"{name} must be a list of distinct eps values in (0, 1], got {strengths!r}; "
            f"huang2021's twelve are {list(EPSILONS_ALL)}"
        )
    return values


def example_spec(
    attack: str, strengths: Sequence[float], images: int | None, seed: int
) -> ExampleSpec:
    """The :class:`ExampleSpec` of a denoiser strategy's parameters (a clear error if bad)."""
    if images is not None and (isinstance(images, bool) or not isinstance(images, int)):
        raise InvalidParameterError(f"images must be a whole number, got {images!r}")
    return ExampleSpec(str(attack), tuple(strengths), images, int(seed))


def load_examples(
    parent: FrozenParent | None, split: SplitLike, spec: ExampleSpec, who: str
) -> AdversarialExamples:
    """The frozen classifier's examples of ``spec`` (generated once, cached with the models)."""
    if parent is None:
        raise InvalidParameterError(f"{who} trains against a classifier; give it a parent")
    device = next(parent.model.parameters()).device
    folder = parent.cache_root / "adversarial" / spec.key(parent.key, parent.data_fingerprint)

    def log(eps: float) -> None:
        if parent.log is not None:
            parent.log(f"generating adversarial examples at eps {eps:g} ({spec.attack})")

    return AdversarialExamples.generate(
        parent.model, split, spec, folder=folder, device=device, on_strength=log
    )


@torch.no_grad()
def accuracy_behind(
    denoiser: nn.Module, classifier: nn.Module, split: Any, head: int | None = None
) -> float:
    """Top-1 accuracy of ``classifier(denoiser(x))`` on the clean images of ``split``."""
    denoiser.eval()
    device = next(denoiser.parameters()).device
    correct = total = 0
    for x, y in split.batches(500, device):
        cleaned = denoiser(x) if head is None else denoiser(x, head=head)
        correct += int((classifier(cleaned).argmax(dim=1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


@STRATEGIES.register("denoise", tags=("huang2021", "denoiser"))
class Denoise(Strategy):
    """Train a pixel denoiser on a frozen classifier's adversarial examples (huang2021).

    Args:
        loss: ``"image"`` (Eq. 4) or ``"semantic"`` (Eq. 5).
        layer: the classifier's module compared by the semantic loss (required for it).
        strengths: the PGD ``eps`` values trained on (huang2021's twelve by default).
        head_strengths: for a multi-head denoiser, one list of strengths per head (Sec. 3.4);
            the strengths are then their union (leave ``strengths`` out).
        attack: the attack making the examples, a spec string without ``eps``.
        images: how many training images are attacked (the first ones; all by default).
        examples_seed: seeds the attack (denoisers sharing it share the examples).
        perturbation: train on this natural degradation of the clean training images
            instead of adversarial examples (``{degradation, levels, ...}``); excludes the
            attack's parameters.

    Raises:
        InvalidParameterError: for an unknown loss, a semantic loss without a layer, bad
            strengths, an unknown attack, or a perturbation given with attack parameters.
    """

    kind: ClassVar[str] = "denoiser"
    parent_role = "classifier"
    parent_use: ClassVar[Literal["start", "frozen"]] = "frozen"

    def __init__(
        self,
        loss: str = "image",
        layer: str | None = None,
        strengths: Sequence[float] | None = None,
        head_strengths: Sequence[Sequence[float]] | None = None,
        attack: str = DEFAULT_ATTACK,
        images: int | None = None,
        examples_seed: int = 0,
        perturbation: dict[str, Any] | None = None,
    ) -> None:
        self.perturbation: Perturbation | None = perturbation_from(perturbation)
        if self.perturbation is not None and (
            strengths is not None
            or head_strengths is not None
            or attack != DEFAULT_ATTACK
            or images is not None
        ):
            raise InvalidParameterError(
                "denoise: perturbation trains on a natural degradation; strengths, "
                "head_strengths, attack and images belong to adversarial training examples"
            )
        if loss not in ("image", "semantic"):
            raise InvalidParameterError(f"denoise: loss must be image or semantic, got {loss!r}")
        if loss == "semantic" and layer is None:
            raise InvalidParameterError(
                "denoise: the semantic loss compares a layer of the classifier; name it with "
                "layer: <module name> (see the classifier's named_modules(); '' for its logits)"
            )
        if loss == "image" and layer is not None:
            raise InvalidParameterError("denoise: layer belongs to loss: semantic")
        self.loss_name = loss
        self.layer = layer
        if head_strengths is not None:
            if strengths is not None:
                raise InvalidParameterError(
                    "denoise: give strengths or head_strengths (whose union are the strengths), "
                    "not both"
                )
            groups = [check_strengths("denoise: head_strengths[i]", g) for g in head_strengths]
            union = tuple(s for g in groups for s in g)
            self.strengths = check_strengths("denoise: head_strengths (together)", union)
            self.head_groups: tuple[tuple[float, ...], ...] | None = tuple(groups)
        else:
            self.strengths = check_strengths(
                "denoise: strengths", EPSILONS_ALL if strengths is None else strengths
            )
            self.head_groups = None
        self.spec = example_spec(attack, self.strengths, images, examples_seed)
        self.classifier: nn.Module | None = None
        self.examples: AdversarialExamples | None = None

    @property
    def heads(self) -> int:
        """The number of heads the denoiser must have."""
        return 1 if self.head_groups is None else len(self.head_groups)

    def describe(self) -> str:
        """``denoise(<loss>, strengths ..., <attack>)``."""
        loss = self.loss_name if self.layer is None else f"semantic@{self.layer or 'logits'}"
        if self.head_groups is not None:
            groups = " | ".join("/".join(f"{s:g}" for s in g) for g in self.head_groups)
            what = f"heads {groups}"
        else:
            what = "strengths " + "/".join(f"{s:g}" for s in self.strengths)
        if self.perturbation is not None:
            return f"denoise({loss}, {self.perturbation.describe()})"
        images = "" if self.spec.images is None else f", {self.spec.images} images"
        return f"denoise({loss}, {what}, {self.spec.attack}{images})"

    def prepare(self, parent: FrozenParent | None, split: SplitLike) -> SplitLike:
        """Keep the classifier; the split is its adversarial examples (or the clean split)."""
        if parent is None:
            raise InvalidParameterError("denoise trains against a classifier; give it a parent")
        self.classifier = parent.model
        if self.perturbation is not None:
            return split
        self.examples = load_examples(parent, split, self.spec, "denoise")
        return self.examples

    def _check(self, model: nn.Module) -> None:
        if not isinstance(model, Denoiser):
            raise InvalidParameterError(
                f"denoise trains a huang2021_denoiser, got {type(model).__name__}; AdvFilter "
                "is trained by the advfilter strategy"
            )
        if model.num_heads != self.heads:
            raise InvalidParameterError(
                f"denoise: the denoiser has {model.num_heads} heads but head_strengths gives "
                f"{self.heads} groups; set the architecture's heads: {self.heads}"
            )

    def head_of(self, strength_index: torch.Tensor) -> torch.Tensor:
        """The head trained on each strength (all 0 for a single head)."""
        if self.head_groups is None:
            return torch.zeros_like(strength_index)
        table = [k for s in self.strengths for k, g in enumerate(self.head_groups) if s in g]
        return torch.tensor(table, device=strength_index.device)[strength_index]

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: StepContext
    ) -> torch.Tensor:
        """The image or semantic loss of the denoised batch (``y`` are the example rows).

        With a ``perturbation``, ``x`` are clean training images, degraded here.
        """
        if self.classifier is None or (self.examples is None and self.perturbation is None):
            raise InvalidParameterError("denoise: prepare() must run before training")
        if context.images == 0:
            self._check(model)
        if self.perturbation is not None:
            clean, x = x, self.perturbation.apply(x, context.generator)
            context.images += len(x)
            return self._compare(clean, model(x))
        assert self.examples is not None
        clean = self.examples.clean(y)
        if self.head_groups is None:
            denoised = model(x)
        else:  # each example through its strengths' head only
            heads = self.head_of(self.examples.strength_index(y))
            every = model.forward_all_heads(x)  # type: ignore[operator]
            denoised = every[heads, torch.arange(len(x), device=x.device)]
        context.images += len(x)
        return self._compare(clean, denoised)

    def _compare(self, clean: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "image":
            return image_loss(clean, denoised)
        assert self.classifier is not None
        return semantic_loss(self.classifier, str(self.layer), clean, denoised)

    def score(self, model: nn.Module, split: Any) -> float:
        """The classifier's clean accuracy behind the denoiser (its first head if several)."""
        if self.classifier is None:
            raise InvalidParameterError("denoise: prepare() must run before scoring")
        head = 0 if getattr(model, "num_heads", 1) > 1 and model.default_head is None else None
        return accuracy_behind(model, self.classifier, split, head)
