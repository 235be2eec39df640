"""Composite models: networks built from other artefacts of a study, without training.

A model entry with ``ensemble``, ``master_slave`` or ``adaptive_filter`` is planned as a
:class:`~robustlab.study.plan.PlannedModel` whose ``composite`` names the kind and its options
and whose parents are the models it is built from, each with a role (``member1``, ``master``,
``branch1``, ``detector``, ``classifier``). :func:`build_composite` turns the provided parents
into the module and its model card; every kind is one builder in :data:`COMPOSITES`, so the
provider (:mod:`robustlab.study.artefacts`) never names a kind.

Builders also measure what the report shows about a composite (its *diagnostics*, stored on
the card): the master's bin confusion matrix and each branch's accuracy per bin for a router,
the learned filter mapping and its accuracies for an adaptive filter. They use the first
:data:`DIAGNOSTIC_IMAGES` test images (each put into every bin with a fixed generator), or
training images where something is *chosen* (the adaptive filter's mapping), so that no choice
ever sees the test set.

Example:
    >>> sorted(COMPOSITES)
    ['adaptive_filter', 'denoised', 'ensemble', 'master_slave']
    >>> describe_composite({"kind": "master_slave", "decision": "switch"})
    'master_slave(MS)'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlab.data.base import Dataset, Split
from robustlab.defend import create_defense
from robustlab.metrics.image_quality import psnr, ssim
from robustlab.models.adaptive_filter import AdaptiveFilter
from robustlab.models.denoised import Denoised
from robustlab.models.ensemble import Ensemble
from robustlab.models.master_slave import MasterSlave
from robustlab.models.shared_trunk import Branch, SharedTrunkBranches
from robustlab.seeding import derive_seed, make_generator
from robustlab.study.plan import PlannedModel
from robustlab.train.bins import DegradationBins

#: Test images a composite's diagnostics are measured on.
DIAGNOSTIC_IMAGES = 1000


@dataclass
class CompositeContext:
    """What a builder may use: the study's data, the device and the planned parents."""

    dataset: Dataset
    device: torch.device
    parents: dict[str, PlannedModel]  # role -> planned parent


Builder = Callable[
    [dict[str, nn.Module], dict[str, Any], CompositeContext], tuple[nn.Module, dict[str, Any]]
]
COMPOSITES: dict[str, Builder] = {}


def _register(kind: str) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        COMPOSITES[kind] = builder
        return builder

    return decorate


def describe_composite(composite: dict[str, Any]) -> str:
    """One line for tables: the kind and its main option."""
    kind = composite["kind"]
    if kind == "ensemble":
        return f"ensemble({composite['combine']})"
    if kind == "master_slave":
        return "master_slave(MS)" if composite["decision"] == "switch" else "master_slave(AMS)"
    if kind == "denoised":
        head, output = composite.get("head"), composite.get("output")
        return (
            f"denoised(head {head})"
            if head is not None
            else f"denoised({output} decoder)"
            if output
            else "denoised"
        )
    return "adaptive_filter(learned)" if composite.get("filters") is None else "adaptive_filter"


#: The parent an attacker unaware of the composite attacks (the oblivious protocol's source).
OBLIVIOUS_ROLES = {
    "ensemble": "member1",
    "master_slave": "branch1",
    "adaptive_filter": "classifier",
    "denoised": "classifier",
}


#: Version of a kind's oblivious source in the cell keys (kept out of the key while 0).
#: Ensembles are 1: before it their oblivious cells were crafted on the whole ensemble (the
#: model had no ``oblivious_source``), so those results must not be reused.
OBLIVIOUS_SOURCE_VERSIONS = {"ensemble": 1}


def oblivious_key(composite: dict[str, Any]) -> dict[str, Any]:
    """What an oblivious cell's key records about the source of a composite's examples."""
    kind = composite["kind"]
    version = OBLIVIOUS_SOURCE_VERSIONS.get(kind, 0)
    return {"source": OBLIVIOUS_ROLES[kind], **({"source_version": version} if version else {})}


def oblivious_role(composite: dict[str, Any]) -> str:
    """The role of the parent that oblivious attacks on ``composite`` are crafted on."""
    return OBLIVIOUS_ROLES[composite["kind"]]


def build_composite(
    planned: PlannedModel, parents: dict[str, nn.Module], context: CompositeContext
) -> tuple[nn.Module, dict[str, Any]]:
    """The composite module of ``planned`` (eval mode, on the device) and its model card."""
    assert planned.composite is not None
    kind = planned.composite["kind"]
    module, card = COMPOSITES[kind](parents, planned.composite, context)
    return module.to(context.device).eval(), {
        **planned.composite,
        "parents": dict(planned.parent_ids),
        **card,
    }


def _bins_of(planned: PlannedModel) -> DegradationBins:
    assert planned.recipe is not None
    return DegradationBins.from_spec(planned.recipe.strategy_params["bins"])


def _first(
    split: Split | Any, count: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, total = [], [], 0
    for x, y in split.batches(500, device):
        xs.append(x[: count - total])
        ys.append(y[: count - total])
        total += len(xs[-1])
        if total >= count:
            break
    return torch.cat(xs), torch.cat(ys)


def _last(split: Any, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    start = max(len(split) - count, 0)
    xs, ys = [], []
    for x, y in split.batches(1000, device, order=torch.arange(start, len(split))):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = sum(
        int((model(x[i : i + 500]).argmax(dim=1) == y[i : i + 500]).sum())
        for i in range(0, len(x), 500)
    )
    return correct / max(len(x), 1)


@_register("ensemble")
def _ensemble(
    parents: dict[str, nn.Module], spec: dict[str, Any], context: CompositeContext
) -> tuple[nn.Module, dict[str, Any]]:
    members = [parents[f"member{k}"] for k in range(1, len(parents) + 1)]
    return Ensemble(members, combine=str(spec["combine"])), {
        "members": [context.parents[f"member{k}"].id for k in range(1, len(parents) + 1)]
    }


@_register("master_slave")
@torch.no_grad()
def _master_slave(
    parents: dict[str, nn.Module], spec: dict[str, Any], context: CompositeContext
) -> tuple[nn.Module, dict[str, Any]]:
    branches: list[nn.Module] = []
    names: list[str] = []
    for k in range(1, len(parents) + 1):
        if f"branch{k}" not in parents:
            continue
        network, planned = parents[f"branch{k}"], context.parents[f"branch{k}"]
        if isinstance(network, SharedTrunkBranches):  # joint_branches: every branch of it
            assert planned.recipe is not None
            heads = [b["name"] for b in planned.recipe.strategy_params["bins"]]
            branches += [Branch(network, j) for j in range(network.branches)]
            names += [f"{planned.id}/{b}" for b in heads]
        else:
            branches.append(network)
            names.append(planned.id)
    router = MasterSlave(branches, parents.get("master")).to(context.device).eval()
    card: dict[str, Any] = {"branches": names}
    master = context.parents.get("master")
    x, y = _first(context.dataset.test, DIAGNOSTIC_IMAGES, context.device)
    if master is None:  # AMS: no bins to measure against
        routed = router.route(x)
        card["diagnostics"] = {
            "images": len(x),
            "clean_route_share": [
                float((routed == k).float().mean()) for k in range(len(branches))
            ],
        }
        return router, card
    bins = _bins_of(master)
    confusion = torch.zeros(len(bins), len(bins), dtype=torch.long)
    branch_accuracy: list[list[float]] = []
    router_accuracy: list[float] = []
    for k, item in enumerate(bins.bins):
        generator = make_generator(derive_seed(0, "diagnostics", item.name), context.device)
        degraded = item.apply(x, generator)
        routed = router.route(degraded).cpu()
        confusion[k] += torch.bincount(routed, minlength=len(bins))
        branch_accuracy.append([_accuracy(b, degraded, y) for b in branches])
        router_accuracy.append(_accuracy(router, degraded, y))
    card["bins"] = bins.spec()
    card["diagnostics"] = {
        "images": len(x),
        "bin_names": bins.names,
        "confusion": confusion.tolist(),
        "branch_accuracy": branch_accuracy,
        "router_accuracy": router_accuracy,
    }
    return router, card


@_register("adaptive_filter")
@torch.no_grad()
def _adaptive_filter(
    parents: dict[str, nn.Module], spec: dict[str, Any], context: CompositeContext
) -> tuple[nn.Module, dict[str, Any]]:
    detector, classifier = parents["detector"], parents["classifier"]
    bins = _bins_of(context.parents["detector"])
    device = context.device
    learned: dict[str, dict[str, float]] = {}
    if spec.get("filters") is not None:
        chosen = {name: spec["filters"][name] for name in bins.names}
    else:
        # The mapping is chosen on training images (the last `holdout`), never on the test set.
        x, y = _last(context.dataset.train, int(spec["holdout"]), device)
        chosen = {}
        for item in bins.bins:
            generator = make_generator(derive_seed(0, "filter-choice", item.name), device)
            degraded = item.apply(x, generator)
            scores: dict[str, float] = {}
            for name, params in spec["candidates"]:
                defense = create_defense(name, **params).to(device).eval()
                label = _defense_label(name, params)
                scores[label] = _accuracy(nn.Sequential(defense, classifier), degraded, y)
            learned[item.name] = scores
            best = max(scores.values())
            chosen[item.name] = next(
                [n, p] for n, p in spec["candidates"] if scores[_defense_label(n, p)] == best
            )
    filters = [create_defense(chosen[b][0], **chosen[b][1]) for b in bins.names]
    pipeline = AdaptiveFilter(detector, classifier, filters).to(device).eval()
    x, y = _first(context.dataset.test, DIAGNOSTIC_IMAGES, device)
    confusion = torch.zeros(len(bins), len(bins), dtype=torch.long)
    accuracy = []
    for k, item in enumerate(bins.bins):
        generator = make_generator(derive_seed(0, "diagnostics", item.name), device)
        degraded = item.apply(x, generator)
        confusion[k] += torch.bincount(pipeline.route(degraded).cpu(), minlength=len(bins))
        accuracy.append(_accuracy(pipeline, degraded, y))
    card = {
        "bins": bins.spec(),
        "mapping": {b: _defense_label(*chosen[b]) for b in bins.names},
        "learned_on": None if not learned else f"last {spec['holdout']} training images",
        "diagnostics": {
            "images": len(x),
            "bin_names": bins.names,
            "confusion": confusion.tolist(),
            "learned_accuracy": learned,
            "pipeline_accuracy": accuracy,
        },
    }
    return pipeline, card


@_register("denoised")
@torch.no_grad()
def _denoised(
    parents: dict[str, nn.Module], spec: dict[str, Any], context: CompositeContext
) -> tuple[nn.Module, dict[str, Any]]:
    denoiser, classifier = parents["denoiser"], parents["classifier"]
    model = Denoised(denoiser, classifier, spec.get("head"), spec.get("output", "fused"))
    model = model.to(context.device).eval()
    trained_for = context.parents["denoiser"].parent_ids.get("classifier")
    x, y = _first(context.dataset.test, DIAGNOSTIC_IMAGES, context.device)
    cleaned = torch.cat([model.denoise(x[i : i + 500]) for i in range(0, len(x), 500)])
    card = {
        "denoiser": context.parents["denoiser"].id,
        "classifier": context.parents["classifier"].id,
        "trained_for": trained_for,
        "diagnostics": {
            "images": len(x),
            "clean_accuracy_bare": _accuracy(classifier, x, y),
            "clean_accuracy_denoised": _accuracy(model, x, y),
            "psnr_denoised_clean": float(psnr(cleaned, x).clamp(max=100).mean()),
            "ssim_denoised_clean": float(ssim(cleaned, x).mean()),
        },
    }
    return model, card


def _defense_label(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    return f"{name}:" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
