"""The denoiser part: what a trained denoiser does to adversarial examples, per strength.

Planned for every ``denoised`` model of a study (a classifier behind a denoiser trained by
``denoise`` or ``advfilter``), with nothing to configure. One job per such model attacks the
first :data:`FIGURE_IMAGES` test images with the attack its denoiser was trained on, at up to
:data:`FIGURE_STRENGTHS` of its training strengths spread from the smallest to the largest,
against the classifier behind it (huang2021's protocol), and stores for the report
(:mod:`robustlab.report.denoiser_sections`):

- the adversarial and the denoised images (Figures 2 and 3 of huang2021);
- what the denoiser predicts per pixel: the uncertainty map of Eq. 10 (the largest value of
  each pixel's kernel) for a filtering denoiser, the size of the predicted inverse perturbation
  for an additive one, and for AdvFilter both decoders' maps and the fusion's weight map;
- for AdvFilter, each decoder's output beside the fused one (Figure 3);
- the predicted K x K kernels at four pixels of the first image (the brightest pixel, the
  pixels of the largest and the smallest map value at the largest strength, and the centre),
  at the smallest and at the largest strength shown (Figure 4).

The report part also puts every denoised model's robust accuracy per strength in one table
beside its bare classifier, under each protocol the study ran (Tables 1, 3 and 4).

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import plan_models
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [
    ...         {"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]},
    ...         {"name": "filt", "architecture": "huang2021_denoiser", "parent": "cnn-e1",
    ...          "params": {"in_channels": 1, "image_size": 28},
    ...          "strategy": {"name": "denoise", "params": {"strengths": [0.1, 0.3]}},
    ...          "epochs": [1]},
    ...         {"name": "cnn-filt", "denoised": {"denoiser": "filt-e1", "model": "cnn-e1"}}]})
    >>> plan = DenoiserPart().plan(cfg, "fp", plan_models(cfg))
    >>> [(job.model.id, job.strengths) for job in plan.jobs]
    [('cnn-filt', [0.1, 0.3])]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.attack import create_attack
from robustlab.models.denoised import Denoised
from robustlab.models.denoisers import AdvFilter, Denoiser, uncertainty_map
from robustlab.report.denoiser_sections import denoiser_blocks
from robustlab.report.document import Block
from robustlab.seeding import derive_seed, make_generator
from robustlab.spec import parse_spec
from robustlab.study.config import StudyConfig
from robustlab.study.parts.base import (
    PartRun,
    ReportContext,
    Shard,
    StudyPart,
    planned_attack_keys,
    register_part,
    transfer_sources,
)
from robustlab.study.plan import PlannedModel
from robustlab.study.store import CellRow, ResultsStore

#: Test images shown per strength.
FIGURE_IMAGES = 3
#: Strengths shown per denoiser (spread over its training strengths).
FIGURE_STRENGTHS = 4
#: Bump when the figures' content changes (job keys).
FIGURE_CODE_VERSION = 2


@dataclass(frozen=True)
class FigureJob:
    """The figures of one classifier behind a denoiser."""

    key: str
    model: PlannedModel
    attack: str
    strengths: list[float]
    images: int = FIGURE_IMAGES


@dataclass
class DenoiserPlan:
    """Every figure job of a study (and the denoised model ids, for the report's tables)."""

    jobs: list[FigureJob] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The jobs as JSON."""
        return {
            "jobs": [
                {
                    "key": j.key,
                    "model": j.model.id,
                    "attack": j.attack,
                    "strengths": j.strengths,
                    "images": j.images,
                }
                for j in self.jobs
            ]
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], models: list[PlannedModel]) -> DenoiserPlan:
        """The stored plan."""
        by_id = {m.id: m for m in models}
        return cls(
            [
                FigureJob(j["key"], by_id[j["model"]], j["attack"], j["strengths"], j["images"])
                for j in data["jobs"]
                if j["model"] in by_id
            ]
        )


def _spread(strengths: list[float], count: int) -> list[float]:
    ordered = sorted(strengths)
    if len(ordered) <= count:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[int(i)] for i in dict.fromkeys(picks.tolist())]


def _denoiser_of(model: PlannedModel) -> PlannedModel:
    return dict(model.parents)["denoiser"]


def plan_figures(fingerprint: str, models: list[PlannedModel]) -> DenoiserPlan | None:
    """One figure job per ``denoised`` model, or None when the study has none."""
    jobs = []
    for model in models:
        if model.composite is None or model.composite["kind"] != "denoised":
            continue
        denoiser = _denoiser_of(model)
        assert denoiser.recipe is not None
        strategy = denoiser.recipe.build_strategy()
        if getattr(strategy, "perturbation", None) is not None:
            continue  # trained on a natural degradation: the degradation part shows it
        spec = strategy.spec  # type: ignore[attr-defined]
        strengths = _spread(list(spec.strengths), FIGURE_STRENGTHS)
        payload = {
            "model": model.key(),
            "data": fingerprint,
            "attack": spec.attack,
            "strengths": strengths,
            "images": FIGURE_IMAGES,
            "code": FIGURE_CODE_VERSION,
        }
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
        jobs.append(FigureJob(key, model, spec.attack, strengths))
    return DenoiserPlan(jobs) if jobs else None


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _kernel_pixels(image: torch.Tensor, certainty: torch.Tensor) -> list[tuple[int, int]]:
    """(row, column) of the brightest pixel, the largest and smallest map value, the centre."""
    h, w = certainty.shape
    brightest = int(image.mean(dim=0).flatten().argmax())
    most = int(certainty.flatten().argmax())
    least = int(certainty.flatten().argmin())
    return [
        (brightest // w, brightest % w),
        (most // w, most % w),
        (least // w, least % w),
        (h // 2, w // 2),
    ]


def _kernels_at(
    kernels: torch.Tensor, channels: int, size: int, pixels: list[tuple[int, int]]
) -> np.ndarray:
    """``(pixels, C, K, K)`` kernels of the first image at ``pixels``."""
    grid = kernels[0].view(channels, size, size, *kernels.shape[-2:])
    return np.stack([grid[:, :, :, r, c].cpu().numpy() for r, c in pixels]).astype(np.float32)


@torch.no_grad()
def _outputs(denoiser: nn.Module, x: torch.Tensor, head: int | None) -> dict[str, torch.Tensor]:
    """The denoised images and the per-pixel maps (and kernels) of one batch."""
    if isinstance(denoiser, AdvFilter):
        parts = denoiser.forward_parts(x)
        return {
            "denoised": parts.denoised,
            "denoised_sl": parts.denoised_sl,
            "denoised_m": parts.denoised_m,
            "map_uncertainty_sl": parts.uncertainty_sl[:, 0],
            "map_uncertainty_m": parts.uncertainty_m[:, 0],
            "map_weight": parts.weight[:, 0],
            "kernels_sl": parts.kernels_sl,
            "kernels_m": parts.kernels_m,
        }
    if isinstance(denoiser, Denoiser):
        denoised, prediction = denoiser.forward_with_prediction(x, head)
        if denoiser.mode == "filtering":
            u = uncertainty_map(prediction, denoiser.in_channels, denoiser.kernel_size)
            return {"denoised": denoised, "map_uncertainty": u[:, 0], "kernels": prediction}
        return {"denoised": denoised, "map_perturbation": prediction.abs().mean(dim=1)}
    return {"denoised": denoiser(x)}


def figure_arrays(
    model: Denoised, job: FigureJob, x: torch.Tensor, y: torch.Tensor
) -> dict[str, np.ndarray]:
    """Everything the report draws for ``job``, computed on the images ``x``."""
    name, params = parse_spec(job.attack)
    arrays: dict[str, list[np.ndarray]] = {"adversarial": [], "denoised": []}
    first: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for eps in job.strengths:
        attack = create_attack(name, **params, eps=eps)
        generator = make_generator(derive_seed(0, "denoiser-figure", eps), x.device)
        adversarial = attack.run(model.classifier, x, y, generator).adversarial.detach()
        out = _outputs(model.denoiser, adversarial, model.head)
        arrays["adversarial"].append(_as_uint8(adversarial))
        for key, value in out.items():
            if key.startswith("map_"):
                arrays.setdefault(key, []).append(value.float().cpu().numpy())
            elif key.startswith("denoised"):
                arrays.setdefault(key, []).append(_as_uint8(value))
        last = {"adversarial": adversarial, **out}
        first = first or last
    stacked = {k: np.stack(v) for k, v in arrays.items()}
    c = x.shape[1]
    for kernels_key, map_key in (
        ("kernels", "map_uncertainty"),
        ("kernels_sl", "map_uncertainty_sl"),
        ("kernels_m", "map_uncertainty_m"),
    ):
        if kernels_key in last:
            # Figure 4: the same pixels at the smallest and the largest strength shown.
            size = round((last[kernels_key].shape[1] // c) ** 0.5)
            pixels = _kernel_pixels(last["adversarial"][0], last[map_key][0])
            stacked[kernels_key] = np.stack(
                [_kernels_at(run[kernels_key], c, size, pixels) for run in (first, last)]
            )
            stacked["kernel_pixels"] = np.array(pixels, dtype=np.int32)
    return stacked


def _first(split: Any, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(iter(split.batches(count, device)))
    return x[:count], y[:count]


@register_part
class DenoiserPart(StudyPart[DenoiserPlan]):
    """Figures of every trained denoiser at work, and its accuracy per strength."""

    name = "denoisers"
    order = 25

    def plan(
        self, config: StudyConfig, fingerprint: str, models: list[PlannedModel]
    ) -> DenoiserPlan | None:
        """One job per classifier behind a denoiser, or None without one."""
        return plan_figures(fingerprint, models)

    def encode(self, plan: DenoiserPlan) -> dict[str, Any]:
        """The jobs as JSON."""
        return plan.to_json()

    def decode(self, data: dict[str, Any], models: list[PlannedModel]) -> DenoiserPlan:
        """The stored plan."""
        return DenoiserPlan.from_json(data, models)

    def size(self, plan: DenoiserPlan) -> int:
        """Number of figure jobs."""
        return len(plan.jobs)

    def done(self, plan: DenoiserPlan, store: ResultsStore) -> int:
        """Number of finished jobs."""
        finished = store.finished_keys()
        return sum(job.key in finished for job in plan.jobs)

    def run(self, plan: DenoiserPlan, context: PartRun) -> int:
        """Compute the figures of every unfinished job."""
        finished = context.store.finished_keys()
        todo = [job for job in plan.jobs if job.key not in finished]
        device = context.provider.device
        for job in todo:
            model = context.provider.provide(job.model)
            assert isinstance(model, Denoised)
            x, y = _first(context.dataset.test, job.images, device)
            arrays = figure_arrays(model, job, x, y)
            row = CellRow(
                key=job.key, kind="denoiser_figure", model=job.model.id, defense="none",
                setting=job.attack, setting_name=job.attack, params={"strengths": job.strengths},
                severity_name=None, severity=None, trial=0, n=len(x), errors=0, accuracy=0.0,
            )  # fmt: skip
            context.store.add_cells([row], {job.key: arrays})
        return len(todo)

    def shards(self, plan: DenoiserPlan) -> list[Shard[DenoiserPlan]]:
        """One shard per figures job (one denoised model)."""
        return [Shard(replace(plan, jobs=[job]), (job.model,), job.key) for job in plan.jobs]

    def report_blocks(self, plan: DenoiserPlan, context: ReportContext) -> list[Block]:
        """Accuracy per strength of every denoised model, and the figures."""
        return denoiser_blocks(
            [(job.model, job.key, job.strengths) for job in plan.jobs],
            context.store,
            context.store.cells(planned_attack_keys(context)),
            transfer_sources(context),
        )
