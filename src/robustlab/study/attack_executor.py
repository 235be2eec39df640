"""The attack part of a study: every model x defence x attack setting under each protocol.

A study's ``attacks:`` entries expand into *attack settings* (one attack at one parameter
combination of its grid). For each model and setting, the executor streams the test set once:

- **oblivious** (huang2021's protocol): the adversarial batch is made against the bare
  classifier once and sent through every defence;
- **adaptive**: for every defence the attack differentiates the whole pipeline
  ``classifier(defence(x))`` (exact gradients, BPDA for non-differentiable defences, EOT for
  random ones: :func:`robustlab.attack.adaptive.attack_surface`) and the result goes through
  the real defence. Without a defence both protocols are the same attack, run once;
- **transfer** (an entry with ``source: <model id>``): the batch is made against another model
  of the study, the source, and sent through every defence of every model (huang2021 Sec. 5:
  examples of the standard classifier evaluated on an adversarially trained one).

Every cell (model x defence x setting x protocol) is a row of the results store's ``cells``
table of kind ``attack``: the attack's label is its ``setting``, the swept parameter (``eps``
or ``steps``) its severity, and the protocol has its own column. Per-sample
predictions, labels, perturbation norms and the sanity counters (zero input gradients,
predictions that change between calls) go to the ``records`` table, from which the report
computes the per-sample worst case over all attacks at one budget. Cells are committed one
group at a time; a rerun skips finished cells.

Seeds: the generator of every attack run in a group is seeded from ``(study seed, attack,
parameters)`` alone, so oblivious and adaptive runs, and every model and defence, start from
the same random points, and a cell gives the same numbers whatever else runs with it.

Example:
    >>> from robustlab.study.config import StudyConfig
    >>> from robustlab.study.plan import make_plan
    >>> cfg = StudyConfig.model_validate({
    ...     "name": "demo", "dataset": {"name": "mnist-sample"},
    ...     "models": [{"name": "cnn", "architecture": "lin2022_cnn", "epochs": [1]}],
    ...     "defenses": ["none", "median"],
    ...     "attacks": [{"name": "pgd", "grid": {"eps": [0.1, 0.3]}}]})
    >>> plan = make_attack_plan(cfg, "abc", make_plan(cfg, "abc").models)
    >>> len(plan.groups), len(plan.cells)  # 2 eps x 2 defences x 2 protocols
    (2, 8)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.attack import create_attack
from robustlab.attack.adaptive import attack_surface
from robustlab.attack.base import Attack, AttackResult, merge_notes
from robustlab.attack.minimum_norm import EPS_SLACK
from robustlab.data.base import Dataset
from robustlab.metrics import psnr, ssim
from robustlab.seeding import derive_seed, make_generator
from robustlab.study.artefacts import ArtefactProvider
from robustlab.study.composites import oblivious_key
from robustlab.study.config import StudyConfig
from robustlab.study.defenses import ModelProvider, build_defense, probe_defense
from robustlab.study.plan import (
    DefenseSetting,
    PlannedModel,
    cells_from_json,
    cells_to_json,
    dataset_key,
    defense_settings,
)
from robustlab.study.progress import SilentProgress
from robustlab.study.store import CellRow, ResultsStore

PROTOCOLS = ("oblivious", "adaptive", "transfer")
# Bump when a change to the attack code changes what a finished cell would hold.
ATTACK_CODE_VERSION = 1


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def defense_label(defense: str, protocol: str) -> str:
    """How the report names a defence under a protocol: ``median (adaptive)``.

    For display only: the store and ``results.csv`` keep defence and protocol apart.
    """
    return f"{defense} ({protocol})"


@dataclass(frozen=True)
class AttackSetting:
    """One attack at one parameter combination of its grid."""

    label: str
    name: str
    params: dict[str, Any]
    severity_name: str | None
    severity: float | None
    norm: str
    eps: float | None
    seed: int
    gradient: str
    eot_samples: int
    minimum_norm: bool = False  # a minimum-norm attack; unbounded when eps is None
    # The attack's code_version when non-zero (absent otherwise, so older keys stay valid).
    code: tuple[int, ...] = ()
    source: str | None = None  # the model the transfer protocol crafts on

    @property
    def unbounded(self) -> bool:
        """A minimum-norm attack without a budget: one run answers every eps of its norm."""
        return self.minimum_norm and self.eps is None

    @property
    def key(self) -> str:
        """Identity of the setting, independent of its label."""
        return _digest({"attack": self.name, "params": self.params})

    def build(self) -> Attack:
        """A fresh attack object for this setting."""
        return create_attack(self.name, **self.params)


@dataclass(frozen=True)
class AttackCell:
    """One row of results: model x defence x attack setting x protocol."""

    key: str
    model: PlannedModel
    defense: DefenseSetting
    setting: AttackSetting
    protocol: str

    @property
    def defense_label(self) -> str:
        """The defence with its protocol, for display: ``median (adaptive)``."""
        return defense_label(self.defense.label, self.protocol)


@dataclass(frozen=True)
class AttackGroup:
    """The cells of one model and attack setting: one pass over the test set."""

    model: PlannedModel
    setting: AttackSetting
    cells: tuple[AttackCell, ...]


@dataclass
class AttackPlan:
    """The expanded ``attacks:`` part of a study."""

    settings: list[AttackSetting]
    defenses: list[DefenseSetting]
    groups: list[AttackGroup] = field(default_factory=list)
    cells: list[AttackCell] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # how adaptive attacks see each defence
    sources: dict[str, PlannedModel] = field(default_factory=dict)  # transfer sources by id

    def to_json(self) -> dict[str, Any]:
        """Settings, defences, cells and adaptive methods, as stored with the resolved plan."""
        data = cells_to_json(
            self.settings, self.defenses, self.cells, [c.protocol for c in self.cells]
        )
        return {**data, "methods": self.methods}

    @classmethod
    def from_json(cls, data: dict[str, Any], models: list[PlannedModel]) -> AttackPlan:
        """The plan as stored: cells, settings and defences, no groups (nothing to run)."""
        settings = [
            AttackSetting(**{**s, "code": tuple(s.get("code", ()))}) for s in data["settings"]
        ]
        defenses, rows = cells_from_json(data, models)
        cells = [
            AttackCell(key, model, defenses[d], settings[s], protocol)
            for key, model, d, s, protocol in rows
        ]
        return cls(settings, defenses, [], cells, list(data.get("methods", [])))


def adaptive_methods(settings: list[AttackSetting], defenses: list[DefenseSetting]) -> list[str]:
    """One line per defence: how adaptive attacks differentiate it (exact, BPDA, EOT)."""
    lines = []
    modes = {(s.gradient, s.eot_samples) for s in settings}
    for d in defenses:
        if d.name == "none":
            continue
        defense = probe_defense(d)
        for gradient, eot in sorted(modes):
            method = attack_surface(
                nn.Identity(),
                defense,
                gradient=gradient,  # type: ignore[arg-type]
                eot_samples=eot,
            )
            lines.append(f"{d.label}: adaptive attacks use {method.method}")
    return list(dict.fromkeys(lines))


def _severity(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def make_attack_plan(
    config: StudyConfig, data_fingerprint: str, models: Iterable[PlannedModel]
) -> AttackPlan:
    """Expand the study's attacks over its models and defences.

    Args:
        config: the validated study.
        data_fingerprint: identifies the exact data (as for :func:`robustlab.study.plan.make_plan`).
        models: the study's planned models (``make_plan(...).models``).
    """
    settings: list[AttackSetting] = []
    protocols: dict[str, list[str]] = {}
    for entry in config.attacks:
        swept = entry.swept
        protocols[entry.label] = list(entry.protocols)
        for params in entry.settings():
            attack = create_attack(entry.name, **params)
            eps = getattr(attack, "eps", None)
            settings.append(
                AttackSetting(
                    label=entry.label,
                    name=entry.name,
                    params=params,
                    severity_name=swept,
                    severity=_severity(params.get(swept)) if swept else None,
                    norm=attack.norm,
                    eps=None if eps is None else float(eps),
                    seed=derive_seed(config.seed, "attack", entry.name, params),
                    gradient=entry.gradient,
                    eot_samples=entry.eot_samples,
                    minimum_norm=bool(getattr(attack, "minimum_norm", False)),
                    code=(attack.code_version,) if attack.code_version else (),
                    source=entry.source,
                )
            )
    defenses = defense_settings(config)
    scope = {
        "dataset": dataset_key(config.dataset),
        "data": data_fingerprint,
        "attack_code": ATTACK_CODE_VERSION,
    }
    models = list(models)
    by_id = {m.id: m for m in models}
    plan = AttackPlan(settings, defenses, methods=adaptive_methods(settings, defenses))
    plan.sources = {s.source: by_id[s.source] for s in settings if s.source is not None}
    for model in models:
        for setting in settings:
            cells = []
            for defense in defenses:
                for protocol in protocols[setting.label]:
                    adaptive = (
                        {"gradient": setting.gradient, "eot": setting.eot_samples}
                        if protocol == "adaptive"
                        else {"source": by_id[str(setting.source)].key()}
                        if protocol == "transfer"
                        else oblivious_key(model.composite)
                        if model.composite is not None
                        else {}
                    )
                    key = _digest(
                        {
                            **scope,
                            "model": model.key(),
                            "defense": defense.key(),
                            "attack": [setting.name, setting.params, *setting.code],
                            "protocol": protocol,
                            "adaptive": adaptive,
                            "seed": setting.seed,
                        }
                    )
                    cells.append(AttackCell(key, model, defense, setting, protocol))
            plan.groups.append(AttackGroup(model, setting, tuple(cells)))
            plan.cells.extend(cells)
    return plan


@dataclass
class _Tally:
    """Per-cell accumulators over the test batches."""

    predicted: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    distance: list[torch.Tensor] = field(default_factory=list)
    zero_gradient: list[torch.Tensor] = field(default_factory=list)
    vanishing_gradient: list[torch.Tensor] = field(default_factory=list)
    unstable: list[torch.Tensor] = field(default_factory=list)
    psnr_sum: float = 0.0
    psnr_count: int = 0
    # The image the classifier finally sees (after the defence, and a composite's denoiser)
    # against the clean image: huang2021's Table 2, for filters and denoisers alike.
    output_psnr_sum: float = 0.0
    output_psnr_count: int = 0
    output_ssim_sum: float = 0.0
    output_count: int = 0
    details: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _distance(adversarial: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (adversarial - x).flatten(1)
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


def _unstable_mask(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        first: torch.Tensor = model(x).argmax(dim=1)
        second: torch.Tensor = model(x).argmax(dim=1)
    return second != first


def _cleaned(model: nn.Module, defense: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """What the classifier sees of ``x``: the defence's output, then a composite's denoiser.

    None when nothing transforms the input (no defence, no denoiser).
    """
    denoise = getattr(model, "denoise", None)
    if isinstance(defense, nn.Identity) and denoise is None:
        return None
    with torch.no_grad():
        out: torch.Tensor = defense(x)
        return denoise(out) if denoise is not None else out


def attack_group(
    model: nn.Module,
    group: AttackGroup,
    dataset: Dataset,
    cells: list[AttackCell],
    *,
    batch_size: int,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
    transfer_source: nn.Module | None = None,
    shared: SharedRuns | None = None,
    provider: ModelProvider | None = None,
) -> dict[str, tuple[CellRow, dict[str, np.ndarray]]]:
    """Run the attack of ``group`` for the given cells; returns ``key -> (row, records)``.

    Args:
        model: the classifier in eval mode on ``device``.
        group: the model and attack setting.
        dataset: the study's dataset (its test split is attacked).
        cells: the cells of ``group`` to compute (the unfinished ones).
        batch_size: images per attack batch.
        device: where to compute.
        on_batch: called with the number of images after each attack run on a batch.
        transfer_source: the model the transfer protocol's examples are crafted on (needed
            when a cell's protocol is ``transfer``).
        shared: attack runs on a source model, kept for the other groups of the same source
            and setting (composites whose oblivious source is one classifier, transfer runs).
        provider: builds the study's trained denoisers used as defences (none needed
            otherwise).
    """
    began = time.perf_counter()
    setting = group.setting
    attack = setting.build()
    num_classes = dataset.num_classes
    defenses = {
        c.defense.label: build_defense(c.defense, provider).to(device).eval() for c in cells
    }
    adaptive = {c.defense.label for c in cells if c.protocol == "adaptive"}
    transfer_needed = any(c.protocol == "transfer" for c in cells)
    if transfer_needed and transfer_source is None:
        raise ValueError(f"attack {setting.label}: the transfer protocol needs its source model")
    # A composite (router, adaptive filter, ensemble, denoised) names the model an attacker
    # unaware of it would attack: the oblivious protocol crafts there and evaluates on it.
    source: nn.Module = getattr(model, "oblivious_source", model)
    # Without a defence the adaptive attack on a plain model is the oblivious run itself.
    oblivious_needed = any(
        c.protocol == "oblivious"
        or (c.protocol == "adaptive" and c.defense.name == "none" and source is model)
        for c in cells
    )
    surfaces = {
        label: attack_surface(
            model,
            defenses[label],
            gradient=setting.gradient,  # type: ignore[arg-type]
            eot_samples=setting.eot_samples,
        )
        for label in adaptive
    }
    tallies = {c.key: _Tally() for c in cells}
    generators = {
        run: make_generator(setting.seed, device)
        for run in ["oblivious", "transfer", *sorted(adaptive)]
    }
    unstable_by_defense: dict[str, torch.Tensor] = {}
    shared = shared if shared is not None else SharedRuns(0)
    sources = {"oblivious": source, "transfer": transfer_source}
    needed = {"oblivious": oblivious_needed, "transfer": transfer_needed}
    # A run on another model than the group's (a composite's source, a transfer source) is the
    # same for every group of that source and setting: reuse it when another group made it.
    shareable = {"oblivious": source is not model, "transfer": True}
    reused = {
        run: shared.get(sources[run], setting.key)
        for run in ("oblivious", "transfer")
        if needed[run] and shareable[run]
    }
    fresh: dict[str, list[AttackResult]] = {run: [] for run in ("oblivious", "transfer")}
    for index, (x, y) in enumerate(dataset.test.batches(batch_size, device)):
        runs: dict[str, AttackResult] = {}
        for run in ("oblivious", "transfer"):
            if not needed[run]:
                continue
            kept = reused.get(run)
            if run == "transfer" and transfer_source is source and "oblivious" in runs:
                runs[run] = runs["oblivious"]  # the same model, setting and seed: one run
                fresh[run].append(runs[run])
                if on_batch is not None:
                    on_batch(len(x))
                continue
            if kept is not None:
                runs[run] = kept[index]
                if on_batch is not None:
                    on_batch(len(x))
                continue
            run_source = sources[run]
            assert run_source is not None
            runs[run] = attack.run(run_source, x, y, generators[run])
            fresh[run].append(runs[run])
            if on_batch is not None:
                on_batch(len(x))
        for label in sorted(adaptive):
            if surfaces[label].model is model and source is model and "oblivious" in runs:
                runs[label] = runs["oblivious"]  # no defence: the same attack
                continue
            runs[label] = attack.run(surfaces[label].model, x, y, generators[label])
            if on_batch is not None:
                on_batch(len(x))
        for label, defense in defenses.items():
            unstable_by_defense[label] = _unstable_mask(nn.Sequential(defense, model), x)
        for cell in cells:
            run = cell.protocol if cell.protocol != "adaptive" else cell.defense.label
            result = runs[run]
            adversarial = result.adversarial
            tally = tallies[cell.key]
            defense = defenses[cell.defense.label]
            with torch.no_grad():
                tally.predicted.append(model(defense(adversarial)).argmax(dim=1))
            cleaned = _cleaned(model, defense, adversarial)
            if cleaned is not None:
                out_psnr = psnr(cleaned, x)
                out_finite = torch.isfinite(out_psnr)
                tally.output_psnr_sum += float(out_psnr[out_finite].sum())
                tally.output_psnr_count += int(out_finite.sum())
                tally.output_ssim_sum += float(ssim(cleaned, x).sum())
                tally.output_count += len(x)
            tally.labels.append(y)
            tally.distance.append(_distance(adversarial, x, setting.norm))
            tally.zero_gradient.append(result.zero_gradient)
            tally.vanishing_gradient.append(result.vanishing_gradient)
            for name, values in result.details.items():
                tally.details.setdefault(name, []).append(values)
            tally.notes = merge_notes(tally.notes, result.notes)
            tally.unstable.append(unstable_by_defense[cell.defense.label])
            quality = psnr(adversarial, x)
            finite = torch.isfinite(quality)
            tally.psnr_sum += float(quality[finite].sum())
            tally.psnr_count += int(finite.sum())
    for run, results in fresh.items():
        if results and shareable[run]:
            shared.put(sources[run], setting.key, results)
    seconds = time.perf_counter() - began
    out: dict[str, tuple[CellRow, dict[str, np.ndarray]]] = {}
    for cell in cells:
        tally = tallies[cell.key]
        predicted = torch.cat(tally.predicted).cpu()
        labels = torch.cat(tally.labels).cpu()
        confusion = torch.bincount(
            labels * num_classes + predicted, minlength=num_classes * num_classes
        ).view(num_classes, num_classes)
        n = len(labels)
        correct = int((predicted == labels).sum())
        row = CellRow(
            key=cell.key,
            kind="attack",
            model=cell.model.id,
            defense=cell.defense.label,
            protocol=cell.protocol,
            setting=setting.label,
            setting_name=setting.name,
            params=setting.params,
            severity_name=setting.severity_name,
            severity=setting.severity,
            trial=0,
            n=n,
            errors=n - correct,
            accuracy=correct / n if n else 0.0,
            metrics={
                "confusion": confusion.tolist(),
                "seconds": seconds / len(cells),
                "copies": 1,
                "psnr": tally.psnr_sum / tally.psnr_count if tally.psnr_count else None,
                "identical": n - tally.psnr_count,
                **(
                    {
                        "output_psnr": tally.output_psnr_sum / tally.output_psnr_count
                        if tally.output_psnr_count
                        else None,
                        "output_ssim": tally.output_ssim_sum / tally.output_count,
                    }
                    if tally.output_count
                    else {}
                ),
                **({"attack_notes": tally.notes} if tally.notes else {}),
            },
        )
        records = {
            "predicted": predicted.to(torch.int16).numpy(),
            "label": labels.to(torch.int16).numpy(),
            "distance": torch.cat(tally.distance).float().cpu().numpy(),
            "zero_gradient": torch.cat(tally.zero_gradient).cpu().numpy(),
            "vanishing_gradient": torch.cat(tally.vanishing_gradient).cpu().numpy(),
            "unstable": torch.cat(tally.unstable).cpu().numpy(),
        }
        for name, parts in tally.details.items():
            records[f"detail_{name}"] = torch.cat(parts).cpu().numpy()
        out[cell.key] = (row, records)
    return out


class SharedRuns:
    """Attack runs on a source model, kept for every group with the same source and setting.

    The oblivious run of a composite is made on its source (the classifier behind a denoiser,
    member 1 of an ensemble), and a transfer run on the attack's source, with the generator
    seeded by the setting alone: the same batches for every group that shares the source (an
    oblivious and a transfer run on one model are the same run), so one run serves them all.
    Runs are kept until ``limit_bytes`` of adversarial images are held; later ones are
    recomputed.

    Args:
        limit_bytes: the most bytes of adversarial images kept.
    """

    def __init__(self, limit_bytes: int = 512 * 2**20) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self._runs: dict[tuple[int, str], list[AttackResult]] = {}

    def get(self, source: nn.Module | None, setting: str) -> list[AttackResult] | None:
        """The kept run on ``source`` for ``setting``, batch by batch, or None."""
        return self._runs.get((id(source), setting))

    def put(self, source: nn.Module | None, setting: str, results: list[AttackResult]) -> None:
        """Keep a whole run (all batches) unless that would pass the limit."""
        key = (id(source), setting)
        size = sum(r.adversarial.numel() * r.adversarial.element_size() for r in results)
        if key not in self._runs and self.bytes + size <= self.limit_bytes:
            self._runs[key] = results
            self.bytes += size


def _runs_per_image(group: AttackGroup, todo: list[AttackCell]) -> int:
    plain = group.model.composite is None  # its oblivious run is on itself
    oblivious = any(
        c.protocol == "oblivious"
        or (c.defense.name == "none" and c.protocol == "adaptive" and plain)
        for c in todo
    )
    adaptive = {
        c.defense.label for c in todo if c.protocol == "adaptive" and c.defense.name != "none"
    }
    transfer = any(c.protocol == "transfer" for c in todo)
    return int(oblivious) + len(adaptive) + int(transfer)


def execute_attacks(
    plan: AttackPlan,
    dataset: Dataset,
    store: ResultsStore,
    *,
    provider: ArtefactProvider,
    batch_size: int,
    progress: SilentProgress | None = None,
    after_group: Callable[[AttackGroup], None] | None = None,
) -> int:
    """Run every attack group with unfinished cells; returns how many cells ran.

    Args:
        plan: the expanded attacks (:func:`make_attack_plan`).
        dataset: train split for training, test split for attacking.
        store: the results store; finished cells are skipped, new ones written per group.
        provider: provides the study's models (trained, cached or loaded), once each.
        batch_size: attack batch size.
        progress: progress reporter.
        after_group: called after each stored group (tests use it to interrupt a run).
    """
    progress = progress or SilentProgress()
    device = provider.device
    finished = store.finished_keys()
    pending = [g for g in plan.groups if any(c.key not in finished for c in g.cells)]
    if not pending:
        return 0
    images = len(dataset.test)
    total = sum(
        images * _runs_per_image(g, [c for c in g.cells if c.key not in finished]) for g in pending
    )
    task = progress.start("attacking", total)
    ran = 0
    shared = SharedRuns()
    models = {g.model.id: g.model for g in pending}
    for model_id, planned in models.items():
        model = provider.provide(planned)
        for group in (g for g in pending if g.model.id == model_id):
            # Two attack entries may share a setting (same parameters): compute it once.
            todo = list({c.key: c for c in group.cells if c.key not in finished}.values())
            if not todo:
                continue
            source = group.setting.source
            transfer = (
                provider.provide(plan.sources[source])
                if source is not None and any(c.protocol == "transfer" for c in todo)
                else None
            )
            results = attack_group(
                model, group, dataset, todo, batch_size=batch_size, device=device,
                on_batch=lambda n: progress.advance(task, n), transfer_source=transfer,
                shared=shared, provider=provider,
            )  # fmt: skip
            store.add_cells(
                [row for row, _ in results.values()],
                {key: records for key, (_, records) in results.items()},
            )
            finished.update(results)
            ran += len(results)
            if after_group is not None:
                after_group(group)
    progress.finish(task)
    return ran


def worst_case(
    plan: AttackPlan, store: ResultsStore
) -> dict[tuple[str, str, str, float], tuple[int, int, list[str]]]:
    """Per-sample worst case over every attack and protocol run at one budget.

    A sample counts as robust for a (model, defence, norm, eps) only if it is classified
    correctly after *every* attack setting and protocol of the study with that norm and eps.
    An unbounded minimum-norm attack of the same norm (``fmn`` without ``eps``) takes part at
    every budget: it fools a sample at ``eps`` when its smallest adversarial perturbation is
    no larger than ``eps`` (:func:`robustlab.attack.minimum_norm.robust_accuracy_curve`).

    Returns:
        ``(model id, defence label, norm, eps) -> (robust samples, samples, cell labels)``
        for the budgets whose cells are all finished.
    """
    members: dict[tuple[str, str, str, float], list[AttackCell]] = {}
    unbounded: dict[tuple[str, str, str], list[AttackCell]] = {}
    for cell in plan.cells:
        if cell.setting.unbounded:
            unbounded.setdefault((cell.model.id, cell.defense.label, cell.setting.norm), []).append(
                cell
            )
        if cell.setting.eps is None:
            continue
        key = (cell.model.id, cell.defense.label, cell.setting.norm, cell.setting.eps)
        members.setdefault(key, []).append(cell)
    finished = store.finished_keys()
    out: dict[tuple[str, str, str, float], tuple[int, int, list[str]]] = {}
    for key, bounded in members.items():
        cells = bounded + unbounded.get(key[:3], [])
        if any(c.key not in finished for c in cells):
            continue
        robust: np.ndarray | None = None
        for cell in cells:
            records = store.records(cell.key)
            if records is None:
                break
            correct = records["predicted"] == records["label"]
            if cell.setting.unbounded:
                limit = key[3] * (1 + EPS_SLACK)
                correct = correct | (records["distance"].astype(np.float64) > limit)
            robust = correct if robust is None else robust & correct
        else:
            assert robust is not None
            names = [f"{c.setting.label} {c.setting.severity_name}={c.setting.severity:g} "
                     f"({c.protocol})" if c.setting.severity is not None else
                     f"{c.setting.label} ({c.protocol})" for c in cells]  # fmt: skip
            out[key] = (int(robust.sum()), len(robust), names)
    return out


def attack_csv_rows(plan: AttackPlan, store: ResultsStore) -> list[dict[str, Any]]:
    """Rows for ``results.csv`` (the columns of :data:`robustlab.study.parts.CSV_COLUMNS`).

    Every finished attack cell, then the per-sample worst case per model, defence and budget
    (degradation ``worst-case``, protocol ``worst-case``).
    """
    rows = {r.key: r for r in store.cells([c.key for c in plan.cells])}
    out: list[dict[str, Any]] = []
    for cell in plan.cells:
        r = rows.get(cell.key)
        if r is None:
            continue
        # Labels come from the plan: a cell shared by two attack entries is stored once.
        s = cell.setting
        out.append(
            r.csv_row(
                _epochs(cell.model),
                defense=cell.defense.label,
                protocol=cell.protocol,
                degradation=s.label,
                degradation_name=s.name,
                severity_name=s.severity_name or "",
                severity="" if s.severity is None else repr(s.severity),
                params=json.dumps(s.params, sort_keys=True),
                ssim="",
            )
        )
    models = {c.model.id: c.model for c in plan.cells}
    for (model, defense, norm, eps), (robust, n, _) in worst_case(plan, store).items():
        out.append(
            {
                "kind": "attack",
                "model": model,
                "epochs": _epochs(models[model]),
                "defense": defense,
                "protocol": "worst-case",
                "degradation": "worst-case",
                "degradation_name": "worst-case",
                "severity_name": "eps",
                "severity": repr(eps),
                "params": json.dumps({"norm": norm, "eps": eps}, sort_keys=True),
                "trial": 0,
                "copies": 1,
                "n": n,
                "errors": n - robust,
                "accuracy": f"{robust / n:.6f}" if n else "",
                "psnr": "",
                "ssim": "",
            }
        )
    return out


def _epochs(model: PlannedModel) -> str:
    epochs = model.epochs
    return "" if epochs is None else str(epochs)
