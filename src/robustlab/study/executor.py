"""The local executor: provides each model, then evaluates its pending groups.

For each group it streams the test set in batches; each batch is degraded once with the group's
generator and sent through every defence of the group. Per defence it accumulates a confusion
matrix, from which the error count and accuracy follow. Finished groups go to the store at once.

Example:
    >>> # see robustlab.study.runner.run_study for the whole path; the executor is its engine
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustlab.data.base import Dataset, SplitLike
from robustlab.degrade import create_degradation
from robustlab.errors import ModelError
from robustlab.metrics import psnr, ssim
from robustlab.models.base import check_logits
from robustlab.seeding import make_generator
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.defenses import build_defense
from robustlab.study.plan import Group, Plan
from robustlab.study.progress import SilentProgress
from robustlab.study.store import CellRow, ResultsStore
from robustlab.tensors import to_uint8

GroupCallback = Callable[[Group], None]


@dataclass
class GroupResult:
    """What one pass over the test set measured, per defence label where it differs."""

    confusion: dict[str, torch.Tensor]
    seconds: float
    forward_seconds: dict[str, float] = field(default_factory=dict)  # defence + model, per label
    psnr_sum: float = 0.0  # over finite PSNRs of the degraded input
    psnr_count: int = 0
    identical: int = 0  # degraded images equal to the clean one (infinite PSNR)
    ssim_sum: float = 0.0
    ssim_count: int = 0
    records: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # What the classifier sees after each defence (and a composite's denoiser) against the
    # clean image, on the first copy: label -> [finite PSNR sum, count, SSIM sum, images].
    output_quality: dict[str, list[float]] = field(default_factory=dict)

    def output_metrics(self, label: str) -> dict[str, float | None]:
        """``output_psnr`` and ``output_ssim`` of one defence, or nothing if not measured."""
        sums = self.output_quality.get(label)
        if not sums or not sums[3]:
            return {}
        return {
            "output_psnr": sums[0] / sums[1] if sums[1] else None,
            "output_ssim": sums[2] / sums[3],
        }

    @property
    def psnr(self) -> float | None:
        """Mean finite PSNR in dB, or None if every degraded image equals its clean one."""
        return self.psnr_sum / self.psnr_count if self.psnr_count else None

    @property
    def ssim(self) -> float | None:
        """Mean SSIM (over the first copy of every image), or None if not measured."""
        return self.ssim_sum / self.ssim_count if self.ssim_count else None


class _Recorder:
    """Per-sample records (PSNR, true-class score, prediction, label) of the first copies."""

    def __init__(self, labels: list[str]) -> None:
        self.parts: dict[str, dict[str, list[torch.Tensor]]] = {
            label: {"psnr": [], "score": [], "predicted": [], "label": []} for label in labels
        }

    def add(
        self,
        label: str,
        psnr: torch.Tensor,
        logits: torch.Tensor,
        y: torch.Tensor,
        predicted: torch.Tensor,
    ) -> None:
        score = logits.float().softmax(dim=1).gather(1, y[:, None])[:, 0]
        part = self.parts[label]
        part["psnr"].append(psnr.clamp(max=99.0).to(torch.float16).cpu())
        part["score"].append(score.to(torch.float16).cpu())
        part["predicted"].append(predicted.to(torch.int16).cpu())
        part["label"].append(y.to(torch.int16).cpu())

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        return {
            label: {k: torch.cat(v).numpy() for k, v in part.items()}
            for label, part in self.parts.items()
            if part["label"]
        }


@torch.inference_mode()
def evaluate_group(
    model: nn.Module,
    group: Group,
    test: SplitLike,
    num_classes: int,
    *,
    batch_size: int,
    device: torch.device,
    defenses: dict[str, nn.Module],
    copies: int = 1,
    quality: bool = True,
    record_copies: int = 0,
    examples: int = 0,
    on_examples: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> GroupResult:
    """Evaluate every defence of ``group`` on ``test`` under the group's degradation.

    Each test batch is degraded ``copies`` times in a row (Monte-Carlo copies, aghdam2016: 150
    per image and noise level), each copy drawn from the group's generator and sent through
    every defence; nothing is kept between copies but counters, so memory does not grow with
    the number of copies.

    Args:
        model: the classifier (eval mode, on ``device``).
        group: which degradation setting, trial and seed.
        test: the test split.
        num_classes: number of logits the model must return.
        batch_size: evaluation batch size.
        device: where to compute.
        defenses: the defence modules by label (on ``device``).
        copies: degraded copies per test image (1 for deterministic degradations).
        quality: measure PSNR (every copy) and SSIM (first copy) of the degraded input.
        record_copies: keep per-sample records of this many leading copies.
        examples: how many leading test images to hand to ``on_examples``.
        on_examples: called as ``(label, images, labels)`` for the degraded input (label
            ``"degraded"``) and for each defence output, on the first batch only.
        on_batch: called with the number of images after each batch, copy and defence.
    """
    began = time.perf_counter()
    degradation = create_degradation(group.setting.name, **group.setting.params)
    generator = make_generator(group.seed, device)
    is_identity = group.setting.name == "none"
    confusion = {
        label: torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
        for label in defenses
    }
    result = GroupResult(confusion={}, seconds=0.0)
    recorder = _Recorder(list(defenses)) if record_copies else None
    forward: dict[str, float] = {}
    first = True
    for x, y in test.batches(batch_size, device):
        for copy in range(copies):
            degraded = degradation(x, generator)
            batch_psnr = None
            if quality and not is_identity:
                batch_psnr = psnr(degraded, x)
                finite = torch.isfinite(batch_psnr)
                result.psnr_sum += float(batch_psnr[finite].sum())
                result.psnr_count += int(finite.sum())
                result.identical += int((~finite).sum())
                if copy == 0:
                    result.ssim_sum += float(ssim(degraded, x).sum())
                    result.ssim_count += len(x)
            keep_examples = first and copy == 0 and on_examples is not None and examples > 0
            if keep_examples:
                on_examples("degraded", degraded[:examples], y[:examples])  # type: ignore[misc]
            for label, defense in defenses.items():
                started = time.perf_counter()
                defended = defense(degraded)
                try:
                    logits = check_logits(model(defended), len(y), num_classes)
                except ModelError as err:
                    raise ModelError(
                        f"model '{group.model.id}' in the cell {group.setting.label} / defence "
                        f"{label}: {err}"
                    ) from err
                predicted = logits.argmax(dim=1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                forward[label] = forward.get(label, 0.0) + time.perf_counter() - started
                if keep_examples:
                    on_examples(label, defended[:examples], y[:examples])  # type: ignore[misc]
                if quality and copy == 0:
                    _add_output_quality(result, label, model, defense, defended, x)
                confusion[label] += torch.bincount(
                    y * num_classes + predicted, minlength=num_classes * num_classes
                )
                if recorder is not None and copy < record_copies:
                    scores_psnr = (
                        batch_psnr
                        if batch_psnr is not None
                        else torch.full((len(y),), float("inf"), device=device)
                    )
                    recorder.add(label, scores_psnr, logits, y, predicted)
                if on_batch is not None:
                    on_batch(len(y))
        first = False
    result.confusion = {k: v.view(num_classes, num_classes).cpu() for k, v in confusion.items()}
    result.records = recorder.arrays() if recorder is not None else {}
    result.forward_seconds = forward
    result.seconds = time.perf_counter() - began
    return result


def _add_output_quality(
    result: GroupResult,
    label: str,
    model: nn.Module,
    defense: nn.Module,
    defended: torch.Tensor,
    clean: torch.Tensor,
) -> None:
    """Add the PSNR / SSIM of what the classifier sees, when a defence or denoiser acts."""
    denoise = getattr(model, "denoise", None)
    if isinstance(defense, nn.Identity) and denoise is None:
        return
    seen = denoise(defended) if denoise is not None else defended
    values = psnr(seen, clean)
    finite = torch.isfinite(values)
    sums = result.output_quality.setdefault(label, [0.0, 0, 0.0, 0])
    sums[0] += float(values[finite].sum())
    sums[1] += int(finite.sum())
    sums[2] += float(ssim(seen, clean).sum())
    sums[3] += len(clean)


@dataclass(frozen=True)
class EvalOptions:
    """How groups are evaluated (from the study config)."""

    batch_size: int = 1000
    quality: bool = True
    record_copies: int = 0
    examples: int = 0


def execute(
    plan: Plan,
    dataset: Dataset,
    store: ResultsStore,
    *,
    provider: ArtefactProvider,
    options: EvalOptions,
    progress: SilentProgress | None = None,
    after_group: GroupCallback | None = None,
) -> int:
    """Run every group of ``plan`` that has unfinished cells; returns how many cells ran.

    Args:
        plan: the expanded study.
        dataset: train split for training, test split for evaluation.
        store: the results store; finished cells are skipped, new ones written at once.
        provider: provides the study's models (trained, cached or loaded), once each.
        options: batch size, quality metrics, records and examples.
        progress: progress reporter.
        after_group: called after each group is stored (used by tests to interrupt a run).
    """
    progress = progress or SilentProgress()
    device = provider.device
    finished = store.finished_keys()
    pending = [g for g in plan.groups if any(c.key not in finished for c in g.cells)]
    have_examples = {setting for setting, _ in store.examples()}
    num_classes = dataset.num_classes
    test = dataset.test
    eval_total = sum(
        len(test) * g.copies * sum(c.key not in finished for c in g.cells) for g in pending
    )
    eval_task = progress.start("evaluating", eval_total) if pending else -1
    ran = 0
    for planned in plan.models:
        groups = [g for g in pending if g.model.id == planned.id]
        if not groups:
            continue
        model = provider.provide(planned)
        for group in groups:
            todo = [c for c in group.cells if c.key not in finished]
            defenses = {
                c.defense.label: build_defense(c.defense, provider).to(device) for c in todo
            }
            setting_key = group.setting.key
            want_examples = options.examples if setting_key not in have_examples else 0

            def keep(
                label: str, images: torch.Tensor, labels: torch.Tensor, _k: str = setting_key
            ) -> None:
                pixels = to_uint8(images).cpu().contiguous()
                store.add_example(
                    _k, label, pixels.numpy().tobytes(), tuple(pixels.shape), labels.tolist()
                )

            result = evaluate_group(
                model,
                group,
                test,
                num_classes,
                batch_size=options.batch_size,
                device=device,
                defenses=defenses,
                copies=group.copies,
                quality=options.quality,
                record_copies=min(options.record_copies, group.copies),
                examples=want_examples,
                on_examples=keep if want_examples else None,
                on_batch=lambda n: progress.advance(eval_task, n),
            )
            have_examples.add(setting_key)
            rows = []
            for cell in todo:
                matrix = result.confusion[cell.defense.label]
                n = int(matrix.sum())
                correct = int(matrix.diag().sum())
                rows.append(
                    CellRow(
                        key=cell.key,
                        kind="degradation",
                        model=cell.model.id,
                        defense=cell.defense.label,
                        setting=cell.setting.label,
                        setting_name=cell.setting.name,
                        params=cell.setting.params,
                        severity_name=cell.setting.severity_name,
                        severity=cell.setting.severity,
                        trial=cell.trial,
                        n=n,
                        errors=n - correct,
                        accuracy=correct / n if n else 0.0,
                        metrics={
                            "confusion": matrix.tolist(),
                            "seconds": result.seconds / len(todo),
                            "copies": group.copies,
                            "psnr": result.psnr,
                            "ssim": result.ssim,
                            "identical": result.identical,
                            "forward_seconds": result.forward_seconds.get(cell.defense.label),
                            **result.output_metrics(cell.defense.label),
                        },
                    )
                )
            records = {
                c.key: result.records[c.defense.label]
                for c in todo
                if c.defense.label in result.records
            }
            store.add_cells(rows, records)
            ran += len(rows)
            if after_group is not None:
                after_group(group)
    if eval_task >= 0:
        progress.finish(eval_task)
    return ran
