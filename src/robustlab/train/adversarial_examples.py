"""Adversarial training examples: generated once per classifier and attack, cached, shared.

huang2021 (Sec. 3.2) trains its denoisers on adversarial examples of the training images made
against the frozen classifier: PGD with n = 40 iterations at twelve strengths. Generating them
is the expensive part of training a denoiser, and every denoiser of one classifier uses the
same ones, so they are an artefact of their own: one file per strength under
``<cache>/adversarial/<key>/``, where the key hashes the classifier's cache key, the training
data's fingerprint, the attack, the number of images and the seed. Two denoisers of one
classifier (additive and filtering, image and semantic loss, a subset of strengths) therefore
generate each strength once; a study killed during generation resumes at the first missing
strength.

Each file holds the perturbations ``adversarial - clean`` as float16 (half the size of
float32; the rounding, below 2.5e-4 of a pixel at the largest strength, is far below every
strength but the smallest, whose perturbations keep 11 significant bits) and the
classifier's accuracy on the examples. :class:`AdversarialExamples` serves them as a training
split: row ``s * N + i`` is image ``i`` at strength ``s``, and its batches yield ``(adversarial
images, row numbers)``; the strategy looks up the clean image, the label and the strength of
each row (:meth:`AdversarialExamples.clean`, ...).

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from robustlab.data.base import Split
    >>> split = Split(torch.randint(0, 255, (6, 1, 4, 4), dtype=torch.uint8), torch.arange(6) % 3)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> examples = AdversarialExamples.generate(
    ...     net, split, ExampleSpec("pgd:steps=2", (0.1, 0.3)),
    ...     folder=tempfile.mkdtemp(), device=torch.device("cpu"))
    >>> len(examples), examples.strengths
    (12, (0.1, 0.3))
    >>> adversarial, rows = next(iter(examples.batches(12)))
    >>> bool(((adversarial - examples.clean(rows)).abs().amax(dim=(1, 2, 3))
    ...       <= examples.strength(rows) + 1e-6).all())
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from robustlab.attack import create_attack
from robustlab.data.base import SplitLike
from robustlab.errors import InvalidParameterError, ModelError, RobustlabError
from robustlab.locks import exclusive
from robustlab.seeding import derive_seed, make_generator
from robustlab.spec import format_spec, parse_spec

#: Bump when a change to generation changes the examples (cache keys).
EXAMPLES_CODE_VERSION = 2  # 2: the classifier's key holds its epochs
#: Images attacked per batch while generating.
GENERATION_BATCH = 500


@dataclass(frozen=True)
class ExampleSpec:
    """Which adversarial examples: the attack (its ``eps`` swept), strengths, images, seed.

    Args:
        attack: a registered attack as a spec string without ``eps`` (``"pgd:steps=40"``).
        strengths: the ``eps`` values, one set of examples each.
        images: the first ``images`` training images are attacked (all when None).
        seed: seeds every attack's randomness (derived per strength).
    """

    attack: str
    strengths: tuple[float, ...]
    images: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        name, params = parse_spec(self.attack)
        if "eps" in params:
            raise InvalidParameterError(
                f"adversarial examples: the attack {self.attack!r} must not set eps; the "
                "strengths are the eps values"
            )
        try:  # a clear error for an unknown attack or parameter, before anything is generated
            create_attack(name, **params, eps=0.1)
        except RobustlabError as err:
            raise InvalidParameterError(
                f"adversarial examples: attack {self.attack!r} cannot be built: {err}"
            ) from err
        if not self.strengths or any(not 0 < float(s) <= 1 for s in self.strengths):
            raise InvalidParameterError(
                f"adversarial examples: strengths must be eps values in (0, 1], got "
                f"{list(self.strengths)}"
            )
        if self.images is not None and self.images < 1:
            raise InvalidParameterError(
                f"adversarial examples: images must be >= 1 (or omitted for all), got {self.images}"
            )

    def key(self, classifier_key: str, data_fingerprint: str) -> str:
        """The folder name: everything the examples depend on except the strength."""
        name, params = parse_spec(self.attack)
        payload = {
            "classifier": classifier_key,
            "data": data_fingerprint,
            "attack": format_spec(name, dict(sorted(params.items()))),
            "images": self.images,
            "seed": self.seed,
            "code": EXAMPLES_CODE_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _file(folder: Path, eps: float) -> Path:
    return folder / f"eps-{float(eps):.6g}.safetensors"


def _first_images(
    split: SplitLike, count: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for x, y in split.batches(1000, device, order=torch.arange(count)):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


class AdversarialExamples:
    """A denoiser's training split: the adversarial examples of N images at S strengths.

    Build with :meth:`generate`, which reuses every strength already on disk.

    Attributes:
        strengths: the ``eps`` values, in row-block order.
        generated: the strengths this object had to generate (empty when all were cached).
        accuracy: the classifier's accuracy on the examples of each strength.
    """

    def __init__(
        self,
        clean: torch.Tensor,
        labels: torch.Tensor,
        deltas: list[torch.Tensor],
        strengths: Sequence[float],
        accuracy: Sequence[float],
        generated: Sequence[float] = (),
    ) -> None:
        self._clean = clean
        self._labels = labels
        self._deltas = deltas
        self.strengths = tuple(float(s) for s in strengths)
        self.accuracy = tuple(float(a) for a in accuracy)
        self.generated = tuple(float(g) for g in generated)

    @classmethod
    def generate(
        cls,
        classifier: nn.Module,
        split: SplitLike,
        spec: ExampleSpec,
        *,
        folder: str | os.PathLike[str],
        device: torch.device,
        on_strength: Callable[[float], None] | None = None,
    ) -> AdversarialExamples:
        """The examples of ``spec`` against ``classifier``, loading the strengths in ``folder``.

        Args:
            classifier: the frozen classifier, in eval mode on ``device``.
            split: the training split (its first ``spec.images`` images are attacked).
            spec: the attack, strengths, images and seed.
            folder: where each strength's file is (written when missing).
            device: where to attack.
            on_strength: called with each strength before it is generated (progress).
        """
        count = len(split) if spec.images is None else min(spec.images, len(split))
        clean, labels = _first_images(split, count, device)
        name, params = parse_spec(spec.attack)
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        deltas, accuracy, generated = [], [], []
        for eps in spec.strengths:
            path = _file(root, eps)
            # Two denoisers of one classifier trained at once (Ray workers) share a strength:
            # the second waits for the first's file instead of attacking again.
            with exclusive(path.with_name(path.name + ".lock")):
                if path.exists():
                    delta, acc = _load(path, count, clean.shape[1:])
                else:
                    if on_strength is not None:
                        on_strength(float(eps))
                    delta, acc = _attack(classifier, clean, labels, name, params, eps, spec.seed)
                    _save(path, delta, acc, spec, float(eps))
                    generated.append(float(eps))
            deltas.append(delta.to(device))
            accuracy.append(acc)
        return cls(clean, labels, deltas, spec.strengths, accuracy, generated)

    @property
    def images(self) -> int:
        """N, the clean images attacked."""
        return len(self._clean)

    @property
    def labels(self) -> torch.Tensor:
        """The class label of every row ``(S * N,)``, on the CPU."""
        return self._labels.repeat(len(self.strengths)).cpu()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self._clean.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return self.images * len(self.strengths)

    def subset(self, limit: int | None) -> AdversarialExamples:
        """These examples (rows are not subset: a subset is chosen by ``images``)."""
        return self

    def fingerprint(self) -> str:
        """Never used for keys (the spec and classifier key are); a digest of the contents."""
        digest = hashlib.sha256(str(self.strengths).encode())
        for delta in self._deltas:
            digest.update(delta.cpu().numpy().tobytes())
        return digest.hexdigest()[:20]

    def _split_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to(self._clean.device)
        return rows // self.images, rows % self.images

    def clean(self, rows: torch.Tensor) -> torch.Tensor:
        """The clean images of ``rows``."""
        return self._clean[self._split_rows(rows)[1]]

    def label(self, rows: torch.Tensor) -> torch.Tensor:
        """The class labels of ``rows``."""
        return self._labels[self._split_rows(rows)[1]]

    def strength_index(self, rows: torch.Tensor) -> torch.Tensor:
        """The index into :attr:`strengths` of every row."""
        return self._split_rows(rows)[0]

    def strength(self, rows: torch.Tensor) -> torch.Tensor:
        """The ``eps`` of every row, float32."""
        table = torch.tensor(self.strengths, dtype=torch.float32, device=self._clean.device)
        return table[self.strength_index(rows)]

    def adversarial(self, rows: torch.Tensor) -> torch.Tensor:
        """The adversarial images of ``rows`` (clean plus the stored perturbation, clamped)."""
        block, image = self._split_rows(rows)
        out = torch.empty_like(self._clean[image])
        for s in torch.unique(block).tolist():
            where = block == s
            eps = self.strengths[s]
            delta = self._deltas[s][image[where]].float().clamp_(-eps, eps)
            out[where] = (self._clean[image[where]] + delta).clamp_(0.0, 1.0)
        return out

    def batches(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(adversarial images, row numbers)``, in ``order`` if given."""
        rows_all = torch.arange(len(self)) if order is None else order
        for start in range(0, len(rows_all), batch_size):
            rows = rows_all[start : start + batch_size]
            yield self.adversarial(rows).to(device), rows.to(device)


def _attack(
    classifier: nn.Module,
    clean: torch.Tensor,
    labels: torch.Tensor,
    name: str,
    params: dict[str, object],
    eps: float,
    seed: int,
) -> tuple[torch.Tensor, float]:
    attack = create_attack(name, **params, eps=eps)
    generator = make_generator(derive_seed(seed, "adversarial-examples", float(eps)), clean.device)
    deltas, correct = [], 0
    for start in range(0, len(clean), GENERATION_BATCH):
        x = clean[start : start + GENERATION_BATCH]
        y = labels[start : start + GENERATION_BATCH]
        adversarial = attack.run(classifier, x, y, generator).adversarial.detach()
        with torch.no_grad():
            correct += int((classifier(adversarial).argmax(dim=1) == y).sum())
        deltas.append((adversarial - x).to(torch.float16).cpu())
    return torch.cat(deltas), correct / max(len(clean), 1)


def _save(path: Path, delta: torch.Tensor, accuracy: float, spec: ExampleSpec, eps: float) -> None:
    tmp = path.with_name(path.name + ".tmp")
    metadata = {
        "accuracy": repr(accuracy),
        "attack": spec.attack,
        "eps": repr(eps),
        "images": str(len(delta)),
    }
    save_file({"delta": delta.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _load(path: Path, count: int, shape: torch.Size) -> tuple[torch.Tensor, float]:
    try:
        with safe_open(str(path), framework="pt") as f:
            delta = f.get_tensor("delta")
            accuracy = float((f.metadata() or {})["accuracy"])
    except (OSError, KeyError, ValueError, SafetensorError) as err:
        raise ModelError(f"adversarial examples {path} cannot be read: {err}; delete it") from err
    if delta.shape != (count, *shape):
        raise ModelError(
            f"adversarial examples {path} hold {tuple(delta.shape)}, expected "
            f"{(count, *tuple(shape))}; delete the file to regenerate it"
        )
    return delta, accuracy
