"""One attack on one (defended) classifier over a split: the engine of ``robustlab attack``.

:func:`evaluate_attack` attacks every image of a split, obliviously (against the bare
classifier) or adaptively (against the whole defended pipeline, with BPDA / EOT where needed,
:func:`robustlab.attack.adaptive.attack_surface`), classifies the adversarial images through
the real defence and checks the evaluation with :mod:`robustlab.attack.sanity`. It keeps the
clean and adversarial images as ``float32`` so that they can be saved and every number checked
independently (:meth:`AttackEvaluation.save`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from robustlab.data.base import Split
    >>> from robustlab.defend import create_defense
    >>> split = Split(torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8), torch.arange(6) % 3)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    >>> result = evaluate_attack(net, split, create_attack("fgsm:eps=0.1"),
    ...                          create_defense("median"), adaptive=True)
    >>> result.adversarial.shape, result.method
    (torch.Size([6, 1, 8, 8]), 'exact gradients')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.attack.adaptive import GradientMode, attack_surface
from robustlab.attack.base import Attack, create_attack, merge_notes
from robustlab.attack.sanity import (
    SanityFlag,
    black_box_wins,
    count_unstable,
    large_eps_survivors,
    unstable_predictions,
    vanishing_gradients,
    zero_gradients,
)
from robustlab.data.base import SplitLike
from robustlab.errors import ModelError
from robustlab.seeding import make_generator

__all__ = ["AttackEvaluation", "create_attack", "evaluate_attack"]


@dataclass
class AttackEvaluation:
    """Everything one attack run over a split measured.

    Attributes:
        clean: the clean images ``(N, C, H, W)``, float32 in ``[0, 1]``.
        adversarial: the adversarial images, same shape.
        labels: true labels ``(N,)``.
        clean_predictions: the defended classifier's predictions on ``clean``.
        predictions: the defended classifier's predictions on ``adversarial``.
        method: how the attacked model's gradients were obtained.
        flags: the sanity flags that tripped.
        notes: what an attack ensemble reported (``autoattack``: its attacks, the version run,
            whether it found the model random and used EOT, how many samples each fooled).
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    labels: torch.Tensor
    clean_predictions: torch.Tensor
    predictions: torch.Tensor
    method: str
    flags: list[SanityFlag] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        """Accuracy of the defended classifier on the clean images."""
        return float((self.clean_predictions == self.labels).float().mean()) if len(self) else 0.0

    @property
    def robust_accuracy(self) -> float:
        """Accuracy of the defended classifier on the adversarial images."""
        return float((self.predictions == self.labels).float().mean()) if len(self) else 0.0

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: str | os.PathLike[str], **meta: str) -> Path:
        """Write the examples and predictions to an ``.npz`` that loads without pickle.

        Arrays: ``clean``, ``adversarial`` (float32), ``labels``, ``predictions``,
        ``clean_predictions`` (int64), and one string array per ``meta`` entry.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "clean": self.clean.numpy(),
            "adversarial": self.adversarial.numpy(),
            "labels": self.labels.numpy(),
            "predictions": self.predictions.numpy(),
            "clean_predictions": self.clean_predictions.numpy(),
        }
        arrays.update({k: np.array(v) for k, v in meta.items()})
        with target.open("wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        return target


def evaluate_attack(
    model: nn.Module,
    split: SplitLike,
    attack: Attack,
    defense: nn.Module | None = None,
    *,
    adaptive: bool = True,
    device: torch.device | str = "cpu",
    seed: int = 0,
    batch_size: int = 256,
    gradient: GradientMode = "auto",
    eot_samples: int = 16,
) -> AttackEvaluation:
    """Attack every image of ``split`` and classify the results through ``defense``.

    Args:
        model: the classifier (pixel space ``[0, 1]`` -> logits).
        split: the images to attack, in order.
        attack: the attack (:func:`robustlab.attack.create_attack`).
        defense: an input defence in front of the classifier; None for none.
        adaptive: attack the defended pipeline (True) or the bare classifier (False).
        device: where to compute.
        seed: seeds the attack's random draws.
        batch_size: images per attack batch.
        gradient: how adaptive attacks differentiate the defence (``auto``, ``exact``, ``bpda``).
        eot_samples: gradient draws per step when the defence is random.
    """
    torch_device = torch.device(device)
    model = model.to(torch_device).eval()
    front = (defense if defense is not None else nn.Identity()).to(torch_device).eval()
    pipeline = nn.Sequential(front, model)
    if adaptive:
        surface = attack_surface(model, front, gradient=gradient, eot_samples=eot_samples)
        target, method = surface.model, surface.method
    else:
        target = model
        method = "oblivious: attacks the bare classifier" + (
            "" if isinstance(front, nn.Identity) else ", then the defence"
        )
    generator = make_generator(seed, torch_device)
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("clean", "adversarial", "labels", "clean_predictions", "predictions")
    }
    zero = 0
    vanishing = 0
    unstable = 0
    notes: dict[str, Any] = {}
    where = f"{type(model).__name__} under {attack!r}"
    for x, y in split.batches(batch_size, torch_device):
        try:
            result = attack.run(target, x, y, generator)
        except ModelError as err:
            raise ModelError(f"{where}: {err}") from err
        notes = merge_notes(notes, result.notes)
        zero += int(result.zero_gradient.sum())
        vanishing += int(result.vanishing_gradient.sum())
        unstable += count_unstable(pipeline, x)
        with torch.no_grad():
            for key, images in (("clean_predictions", x), ("predictions", result.adversarial)):
                logits = pipeline(images)
                if torch.isnan(logits).any():
                    raise ModelError(
                        f"{where}: the model returned NaN logits on the "
                        f"{key.removesuffix('predictions').rstrip('_') or 'adversarial'} images; "
                        "check the model's weights and its normalisation (inputs are pixels in "
                        "[0, 1])"
                    )
                parts[key].append(logits.argmax(dim=1).cpu())
        parts["clean"].append(x.cpu())
        parts["adversarial"].append(result.adversarial.cpu())
        parts["labels"].append(y.cpu())
    shape = (0, *split.image_shape)
    joined = {
        k: torch.cat(v) if v else torch.zeros(shape if k in ("clean", "adversarial") else (0,))
        for k, v in parts.items()
    }
    evaluation = AttackEvaluation(
        clean=joined["clean"].float(),
        adversarial=joined["adversarial"].float(),
        labels=joined["labels"].long(),
        clean_predictions=joined["clean_predictions"].long(),
        predictions=joined["predictions"].long(),
        method=method,
        notes=notes,
    )
    n = len(evaluation)
    candidates = [
        zero_gradients(zero, n),
        vanishing_gradients(vanishing, n),
        unstable_predictions(unstable, n),
    ]
    eps = getattr(attack, "eps", None)
    if isinstance(front, nn.Identity) and eps is not None and n:
        correct = int((evaluation.predictions == evaluation.labels).sum())
        dims = int(np.prod(split.image_shape))
        candidates.append(large_eps_survivors(attack.norm, float(eps), dims, correct, n))
    candidates.append(_black_box_flag(notes, n))
    evaluation.flags = [f for f in candidates if f is not None]
    return evaluation


def _black_box_flag(notes: dict[str, Any], total: int) -> SanityFlag | None:
    """An ensemble's black-box members fooling samples its white-box members left standing."""
    from robustlab.attack.autoattack import BLACK_BOX

    names = list(notes.get("attacks", []))
    fooled = notes.get("fooled_by", {})
    blind = [name for name in names if name in BLACK_BOX]
    white = [name for name in names if name not in BLACK_BOX]
    return black_box_wins(
        "/".join(blind), sum(int(fooled.get(name, 0)) for name in blind), total,
        white_box=f"{', '.join(white) or 'no attack'} (before it)",
    )  # fmt: skip
