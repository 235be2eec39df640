"""Training throughput of every training strategy against a hand-written PyTorch loop.

For every registered strategy (``robustlab.train.strategy.STRATEGIES``) this trains one epoch
of the real loop, ``robustlab.train.loop.train_epochs``, on a model from ``build_model`` with
the optimizer of ``make_optimizer`` and the recipe's strategy, and one epoch of a plain PyTorch
loop written out by hand that does exactly the same work: the same model and initial weights,
the same optimizer (Adam, learning rate 1e-4, lin2022's recipe), the same batches (a seeded
shuffle, uint8 -> float32 / 255), the same forward and backward passes and the same
perturbation maths written directly in torch:

- ``standard``: cross-entropy of the clean batch;
- ``constant``: every image plus clipped Gaussian noise of variance drawn per image from
  ``[0.001, 0.05]`` (cavey), then cross-entropy;
- ``incremental``: the same noise on a random 52.5 % of each batch (the middle epoch of a
  3-epoch linear schedule from 5 % to 100 %: each image perturbed with that probability);
- ``augment``: the batch and ``--copies`` noisy copies of it (aghdam2016's sigma on the 0-255
  scale, one copy per level) concatenated into one forward pass;
- ``stability``: ``CE(f(x)) + 0.01 * KL(p(x) || p(x'))`` with ``x' = clip(x + 0.04 * N)``,
  clean and noisy copy in one forward pass;
- ``transfer``: a new head (fc 256 + ReLU + fc 10) in place of the parent's output layer,
  only the head trained (the rest frozen and in eval mode), every image noisy as ``constant``;
- ``finetune``: only the parent's last ``nn.Linear`` trained (the rest frozen, eval mode), on
  the clean batch and a copy with Gaussian noise of sigma drawn per image from ``[0.05, 0.3]``;
- ``adversarial``: PGD adversarial training (Madry et al.) against the textbook PGD-AT loop:
  model in eval mode, a random start in the L-inf ball, ``--pgd-steps`` sign steps of
  ``2.5 * eps / steps`` on the input gradient (``torch.autograd.grad``), projection onto the
  ball and ``[0, 1]``, then cross-entropy of the adversarial batch in training mode;
- ``quality``: the network with its last ``nn.Linear`` resized to 3 outputs, trained with
  cross-entropy on bin labels: each image put into one of three bins drawn uniformly (clean;
  clipped Gaussian noise of sigma uniform in ``[0.05, 0.15]``; in ``[0.2, 0.5]``), degraded at
  a level drawn in its bin (the digit labels are unused);
- ``joint_branches``: the same three bins; the parent up to its last ``nn.Linear`` is the
  trunk, with one copy of that layer per bin as heads (``layers: 1``, ``trunk: trained``); each
  bin's images go through the trunk and their bin's head (one pass per bin, as the strategy
  routes them), the loss is the summed cross-entropy over the batch divided by its size;
- ``denoise``: huang2021's filtering U-Net denoiser (``huang2021_denoiser``, width 8, 3x3
  kernels: configs/papers/huang2021.yaml's MNIST network) in front of the frozen classifier,
  trained with the image loss (mean ``|clean - denoised|``) on the classifier's adversarial
  examples of the ``--images`` training images at two strengths, eps 0.03 and 0.3;
- ``advfilter``: huang2021's AdvFilter (``huang2021_advfilter``, width 8, fusion 16) on the
  same examples. ``--advfilter-stage ynet`` (default) times a Y-Net epoch: each decoder's
  per-image L1 only on its own strengths' examples (phi_sl: 0.03 and 0.3, phi_m: 0.3), summed
  and divided by the batch size; ``fusion`` times a fusion epoch (the strategy's epochs after
  ``ynet_epochs``): the Y-Net run without gradients, the fusion network trained on the
  classifier's cross-entropy of the fused output (rows named ``advfilter:fusion``).

The parent of ``transfer``, ``finetune`` and ``joint_branches``, and the frozen classifier of
``denoise`` and ``advfilter``, is the architecture at its seeded initialisation (training it
first would not change the cost; nor do the untrained Y-Net's weights change a fusion epoch's).
A strategy registered later without a plain loop here is timed alone (with its default
parameters, if it has them).

The plain loops are plain torch; they use robustlab only for a network architecture they would
otherwise have to copy out (the U-Net and Y-Net of ``denoise`` and ``advfilter``, called as
modules; the uncertainty maps, fusion, losses and masks are written out) and, for the
denoisers, for the training set: **the adversarial examples are a cached artefact**, made once
per classifier by ``robustlab.train.adversarial_examples`` (here by 10-step PGD, 2.5 eps / 10
per step: the attack's strength does not change a denoiser epoch's cost) into a temporary cache
before anything is timed, and shared by both sides. robustlab's loop serves them as
:class:`AdversarialExamples` does in training (float16 perturbations added to the clean images
batch by batch, rows looked up per batch); the plain loop gets the same images materialised
once as one float32 tensor, as a hand-written loop would hold its training set. Only the
denoiser epochs on those examples are timed, never their generation. One clean image gives one
example per strength, so ``x imgs`` is 2 for them, and the warm-up trains on the warm-up
images' examples.

``--check`` compares instead of timing: for each strategy, one robustlab step
(``strategy.loss``, backward, optimizer step) and one plain step from identical weights, on the
same tiny batch (``--check-images``, 8; for the denoisers rows of both strengths), with equally
seeded generators and global seed (dropout); the losses of that step and of a second step after
each optimizer stepped must agree to ``--check-tolerance`` (1e-5). The plain loops draw their
random numbers in robustlab's order, so every strategy agrees exactly (difference 0).

Two throughputs are given: *clean* images per second (images of the training split per
second, the rate at which an epoch goes by) and *trained* images per second (the images the
model was trained on: clean images and the copies a strategy adds; PGD's attack passes are not
counted). The ratio is robustlab / plain on the same work, so > 1 means robustlab is faster.

After a warm-up (one pass over ``--warmup`` images each), robustlab and plain run ``--repeats``
times each, interleaved (alternating which goes first), each run one epoch over ``--images``
training images; the table shows medians and the spread (max / min) of the repeats. The data
are the real MNIST digits (``$ROBUSTLAB_DATA`` or ``../shared/datasets``), else the embedded
``mnist-sample``. As the ``robustlab`` command does, the glibc allocator is tuned first
(:func:`robustlab.device.tune_cpu_allocator`, process-wide: both loops benefit). The load
average is printed: on a shared machine the numbers are noisy; rerun when it is low, or use
``--threads 1`` (two threads on two busy cores wait for each other). About 4 minutes at one
thread on a loaded 2-core machine (load 12), 12 minutes at two (see benchmarks/README.md).

Run:
    python benchmarks/bench_strategies.py [--only adversarial constant] [--images 1000]
        [--batch 100] [--repeats 3] [--threads 2] [--pgd-steps 7] [--copies 4] [--json PATH]
        [--advfilter-stage ynet|fusion] [--profile STRATEGY] [--check]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.base import Split, SplitLike
from robustlab.data.datasets import load_dataset
from robustlab.device import tune_cpu_allocator
from robustlab.models import create_model
from robustlab.train.adversarial_examples import AdversarialExamples
from robustlab.train.loop import TrainingRecipe, build_model, make_optimizer, train_epochs
from robustlab.train.strategy import (
    STRATEGIES,
    FrozenParent,
    StepContext,
    create_strategy,
    load_builtin_strategies,
)

REPO = Path(__file__).resolve().parents[1]
NOISE_VARIANCE = (0.001, 0.05)  # constant / incremental / transfer: cavey's variance range
FINETUNE_SIGMA = (0.05, 0.3)
INCREMENTAL = (0.05, 1.0, 3, 1)  # start share, end share, total epochs, the epoch timed
LEARNING_RATE = 1e-4  # lin2022's Adam learning rate, the recipe default
# quality / joint_branches: a clean bin and two bins of clipped Gaussian noise, sigma in a range
BIN_SIGMAS: tuple[tuple[float, float] | None, ...] = (None, (0.05, 0.15), (0.2, 0.5))
# denoise / advfilter: the classifier's adversarial examples at two of huang2021's strengths
# (phi_sl of advfilter learns from both, phi_m from the larger), made by a 10-step PGD
EXAMPLE_STRENGTHS = (0.03, 0.3)
M_STRENGTHS = (0.3,)
EXAMPLE_ATTACK = "pgd:rel_step_size=0.25,steps=10"
ADVFILTER_YNET_EPOCHS = 1  # epoch 0 trains the Y-Net, epoch 1 the fusion
# The networks of configs/papers/huang2021.yaml (MNIST): width-8 U-Net, 3x3 filtering kernels.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "denoise": (
        "huang2021_denoiser",
        {"in_channels": 1, "image_size": 28, "width": 8, "mode": "filtering", "kernel_size": 3},
    ),
    "advfilter": (
        "huang2021_advfilter",
        {"in_channels": 1, "image_size": 28, "width": 8, "kernel_size": 3, "fusion_hidden": 16},
    ),
}

# (model, x, y, generator) -> (loss, images trained on)
PlainLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[Any, int]]


# ---------------------------------------------------------------- the plain, hand-written side


def noise_variance_per_image(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Clipped Gaussian noise, variance uniform in NOISE_VARIANCE, one draw per image."""
    low, high = NOISE_VARIANCE
    var = low + (high - low) * torch.rand(len(x), generator=g, device=x.device, dtype=torch.float64)
    std = var.sqrt().to(x.dtype).view(-1, 1, 1, 1)
    return (x + std * torch.randn(x.shape, generator=g, device=x.device)).clamp(0, 1)


def plain_standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    return F.cross_entropy(model(x), y), len(y)


def plain_constant(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    return F.cross_entropy(model(noise_variance_per_image(x, g)), y), len(y)


def plain_incremental(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator
) -> Any:
    start, end, total, epoch = INCREMENTAL
    share = start + (end - start) * epoch / (total - 1)
    chosen = (torch.rand(len(x), generator=g, device=x.device) < share).nonzero().flatten()
    mixed = x.clone()
    mixed[chosen] = noise_variance_per_image(x[chosen], g)
    return F.cross_entropy(model(mixed), y), len(y)


def plain_augment(sigmas_255: list[float]) -> PlainLoss:
    sigmas = torch.tensor(sigmas_255) / 255.0

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
        k = len(sigmas)
        std = sigmas.to(x.device).repeat_interleave(len(x)).view(-1, 1, 1, 1)
        stacked = x.repeat(k, 1, 1, 1)
        noisy = (stacked + std * torch.randn(stacked.shape, generator=g, device=x.device)).clamp(
            0, 1
        )
        return F.cross_entropy(model(torch.cat([x, noisy])), y.repeat(k + 1)), (k + 1) * len(y)

    return loss


def plain_stability(alpha: float, sigma: float) -> PlainLoss:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
        noisy = (x + sigma * torch.randn(x.shape, generator=g, device=x.device)).clamp(0, 1)
        clean_logits, noisy_logits = model(torch.cat([x, noisy])).chunk(2)
        log_p = F.log_softmax(clean_logits, dim=1)
        log_q = F.log_softmax(noisy_logits, dim=1)
        kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        return F.cross_entropy(clean_logits, y) + alpha * kl, 2 * len(y)

    return loss


def plain_finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    low, high = FINETUNE_SIGMA
    u = torch.rand(len(x), generator=g, device=x.device, dtype=torch.float64)
    sigma = (low + (high - low) * u).to(x.dtype)  # drawn as robustlab draws levels
    noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g, device=x.device)
    batch = torch.cat([x, noisy.clamp(0, 1)])
    return F.cross_entropy(model(batch), torch.cat([y, y])), 2 * len(y)


def plain_pgd_at(eps: float, steps: int) -> PlainLoss:
    """The textbook PGD-AT step: eval-mode PGD from a random start, then CE in train mode."""
    alpha = 2.5 * eps / steps

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
        model.eval()
        start = torch.empty(x.shape, device=x.device).uniform_(-eps, eps, generator=g)
        adv = (x + start).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            attack_loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(attack_loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        model.train()
        return F.cross_entropy(model(adv.detach()), y), len(y)

    return loss


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def new_head(model: nn.Module) -> nn.Module:
    """transfer by hand: the last Linear becomes Linear(in, 256) + ReLU + Linear(256, out)."""
    name, old = last_linear(model)
    owner, _, attribute = name.rpartition(".")
    head = nn.Sequential(
        nn.Linear(old.in_features, 256), nn.ReLU(), nn.Linear(256, old.out_features)
    )
    setattr(model.get_submodule(owner) if owner else model, attribute, head)
    return head


def new_output(model: nn.Module, outputs: int) -> None:
    """quality by hand: the last Linear replaced by a fresh one with one output per bin."""
    name, old = last_linear(model)
    owner, _, attribute = name.rpartition(".")
    setattr(
        model.get_submodule(owner) if owner else model,
        attribute,
        nn.Linear(old.in_features, outputs),
    )


# quality / joint_branches: each image put into a bin drawn uniformly, then degraded at a level
# drawn in its bin (clean, or clipped Gaussian noise of sigma uniform in the bin's range); the
# draws in the order DegradationBins.sample makes them, so --check can compare losses exactly.
def plain_bins(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.randint(len(BIN_SIGMAS), (len(x),), generator=g, device=x.device)
    out = torch.empty_like(x)
    for k, sigma in enumerate(BIN_SIGMAS):
        index = (label == k).nonzero().flatten()
        if len(index) == 0:
            continue
        if sigma is None:
            out[index] = x[index]
            continue
        low, high = sigma
        u = torch.rand(len(index), generator=g, device=x.device, dtype=torch.float64)
        std = (low + (high - low) * u).to(x.dtype).view(-1, 1, 1, 1)
        noise = torch.randn((len(index), *x.shape[1:]), generator=g, device=x.device)
        out[index] = (x[index] + std * noise).clamp(0, 1)
    return out, label


def plain_quality(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> Any:
    degraded, label = plain_bins(x, g)  # the digit labels y are not used
    return F.cross_entropy(model(degraded), label), len(x)


class PlainBranches(nn.Module):
    """joint_branches by hand: the parent up to its last Linear (the trunk), one Linear per bin."""

    def __init__(self, parent: nn.Module, branches: int) -> None:
        super().__init__()
        name, last = last_linear(parent)
        self.trunk = copy.deepcopy(parent)
        owner, _, attribute = name.rpartition(".")
        setattr(self.trunk.get_submodule(owner) if owner else self.trunk, attribute, nn.Identity())
        self.heads = nn.ModuleList(copy.deepcopy(last) for _ in range(branches))
        self.last = name

    def robust_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SharedTrunkBranches' state (base = trunk + head 0, heads.j = head j + 1) renamed."""
        renamed = {}
        for key, value in state.items():
            if key.startswith(f"base.{self.last}."):
                renamed["heads.0." + key.rpartition(".")[2]] = value
            elif key.startswith("base."):
                renamed["trunk." + key[len("base.") :]] = value
            else:  # heads.<j>.0.<weight|bias>
                _, j, _, parameter = key.split(".")
                renamed[f"heads.{int(j) + 1}.{parameter}"] = value
        return renamed


def plain_joint_branches(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator
) -> Any:
    """Each bin's images through the trunk and that bin's head; summed CE over all images."""
    degraded, label = plain_bins(x, g)
    total, counted = x.new_zeros(()), 0
    for k, head in enumerate(model.heads):
        index = (label == k).nonzero().flatten()
        if len(index) == 0:
            continue
        logits = head(model.trunk(degraded[index]))
        total = total + F.cross_entropy(logits, y[index], reduction="sum")
        counted += len(index)
    return total / counted, counted


# denoise / advfilter train on adversarial examples: row s * N + i is clean image i attacked at
# strength s. The plain loop holds them as tensors made once before timing (see Rows); y are
# the row numbers, from which it looks up the clean image, the label and the strength.
def plain_denoise(clean: torch.Tensor) -> PlainLoss:
    """huang2021's image loss (Eq. 4): mean |clean - denoised| of the denoised examples."""
    n = len(clean)

    def loss(model: nn.Module, x: torch.Tensor, rows: torch.Tensor, g: torch.Generator) -> Any:
        return (clean[rows % n] - model(x)).abs().mean(), len(rows)

    return loss


def plain_ynet(clean: torch.Tensor, in_sl: torch.Tensor, in_m: torch.Tensor) -> PlainLoss:
    """AdvFilter's first stage: each decoder's per-image L1 on its own strengths' examples."""
    n = len(clean)

    def loss(model: nn.Module, x: torch.Tensor, rows: torch.Tensor, g: torch.Generator) -> Any:
        out = model.ynet(x)
        target, strength = clean[rows % n], rows // n
        l1_sl = (target - out.denoised_sl).abs().flatten(1).mean(dim=1)
        l1_m = (target - out.denoised_m).abs().flatten(1).mean(dim=1)
        return ((l1_sl * in_sl[strength]).sum() + (l1_m * in_m[strength]).sum()) / len(x), len(x)

    return loss


def plain_fusion(labels: torch.Tensor, classifier: nn.Module) -> PlainLoss:
    """AdvFilter's second stage: the Y-Net frozen, the fusion trained on the classifier's CE."""
    n = len(labels)

    def loss(model: nn.Module, x: torch.Tensor, rows: torch.Tensor, g: torch.Generator) -> Any:
        with torch.no_grad():
            out = model.ynet(x)
        uncertainty = torch.cat(
            [out.kernels_sl.amax(dim=1, keepdim=True), out.kernels_m.amax(dim=1, keepdim=True)],
            dim=1,
        )
        weight = model.fusion(uncertainty)
        fused = weight * out.denoised_sl + (1 - weight) * out.denoised_m
        return F.cross_entropy(classifier(fused), labels[rows % n]), len(x)

    return loss


@dataclass
class Rows:
    """Adversarial training examples as plain tensors: every row's image and the rows served."""

    images: torch.Tensor
    rows: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)


def fetch(data: Split | Rows, index: torch.Tensor, device: torch.device) -> Any:
    """The plain loop's batch ``index``: uint8 -> float32 / 255 and labels, or example rows."""
    if isinstance(data, Rows):
        rows = data.rows[index]
        return data.images[rows].to(device), rows.to(device)
    return data.images[index].to(device).float().div_(255.0), data.labels[index].to(device)


@dataclass
class Plain:
    """A hand-written training loop: its model, optimizer, per-batch loss and data."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: PlainLoss
    mode: Callable[[], None]
    generator: torch.Generator
    train: Split | Rows
    warm: Split | Rows

    def epoch(self, data: Split | Rows, batch_size: int, device: torch.device) -> int:
        """One epoch over ``data``; returns the number of images trained on."""
        self.mode()
        order = torch.randperm(len(data), generator=self.generator)
        trained = 0
        for start in range(0, len(data), batch_size):
            x, y = fetch(data, order[start : start + batch_size], device)
            loss, images = self.loss(self.model, x, y, self.generator)
            trained += images
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.model.eval()
        return trained


def plain_for(name: str, robust: Robust, args: argparse.Namespace) -> Plain | None:
    """The hand-written counterpart of strategy ``name``, from the same initial weights."""
    robust_model, parent = robust.model, robust.parent
    device = next(robust_model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(1)
    losses: dict[str, PlainLoss] = {
        "standard": plain_standard,
        "constant": plain_constant,
        "incremental": plain_incremental,
        "augment": plain_augment(augment_sigmas(args.copies)),
        "stability": plain_stability(0.01, 0.04),
        "adversarial": plain_pgd_at(args.eps, args.pgd_steps),
        "transfer": plain_constant,
        "finetune": plain_finetune,
        "quality": plain_quality,
        "joint_branches": plain_joint_branches,
    }
    if name not in losses and name not in ("denoise", "advfilter"):
        return None
    train: Split | Rows = robust.clean_split
    warm: Split | Rows = robust.clean_warm
    state = robust_model.state_dict()
    if name in ("transfer", "finetune"):
        assert parent is not None
        model = copy.deepcopy(parent)
        head = new_head(model) if name == "transfer" else last_linear(model)[1]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        trained = list(head.parameters())

        def mode() -> None:
            model.eval()
            head.train()
    elif name in ("denoise", "advfilter"):
        # The same examples, materialised once as float32 tensors (outside the timed epochs).
        examples = robust.train
        assert isinstance(examples, AdversarialExamples) and parent is not None
        split, n = robust.clean_split, robust.clean_split.images.shape[0]
        every = torch.arange(len(examples))
        images = examples.adversarial(every).to(device)
        clean = split.images.to(device).float().div_(255.0)
        train = Rows(images, every)
        warm = Rows(images, robust.warm.rows)  # type: ignore[union-attr]
        arch, arch_params = ARCHITECTURES[name]
        model = create_model(arch, **arch_params)
        trained = list(model.parameters())
        if name == "denoise":
            losses[name] = plain_denoise(clean)
        elif robust.stage == "ynet":
            strengths = torch.tensor(examples.strengths)
            in_sl = torch.isin(strengths, torch.tensor(EXAMPLE_STRENGTHS)).to(device)
            in_m = torch.isin(strengths, torch.tensor(M_STRENGTHS)).to(device)
            losses[name] = plain_ynet(clean, in_sl, in_m)
            trained = list(model.ynet.parameters())  # type: ignore[union-attr]
        else:
            classifier = copy.deepcopy(parent).eval().requires_grad_(False)
            losses[name] = plain_fusion(split.labels[:n].to(device), classifier)
            model.ynet.requires_grad_(False)  # type: ignore[union-attr]
            trained = list(model.fusion.parameters())  # type: ignore[union-attr]

        def mode() -> None:
            model.train()
            if robust.stage == "fusion":
                model.ynet.eval()  # type: ignore[union-attr]
    else:
        model = create_model(args.arch)
        if name == "quality":
            new_output(model, len(BIN_SIGMAS))
        elif name == "joint_branches":
            model = PlainBranches(model, len(BIN_SIGMAS))
            state = model.robust_weights(state)
        trained = list(model.parameters())

        def mode() -> None:
            model.train()

    # Same initial weights as robustlab's model; this also checks the structures match.
    model.load_state_dict(state)
    model.to(device)
    optimizer = torch.optim.Adam(trained, lr=LEARNING_RATE)
    return Plain(model, optimizer, losses[name], mode, generator, train, warm)


# ------------------------------------------------------------------------- the robustlab side


def augment_sigmas(copies: int) -> list[float]:
    """``copies`` sigmas (0-255 scale) evenly over aghdam2016's range 1..40."""
    if copies == 1:
        return [20.0]
    return [round(1 + 39 * i / (copies - 1), 3) for i in range(copies)]


def bins_spec() -> list[dict[str, Any]]:
    """BIN_SIGMAS as the bins of quality and joint_branches (a clean bin, two noise bins)."""
    bins: list[dict[str, Any]] = []
    for k, sigma in enumerate(BIN_SIGMAS):
        if sigma is None:
            bins.append({"name": f"bin{k}-clean"})
            continue
        levels = {"low": sigma[0], "high": sigma[1]}
        noise = {"degradation": "gaussian_noise", "levels": levels}
        bins.append({"name": f"bin{k}-noise", "degradations": [noise]})
    return bins


def strategy_params(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The strategy parameters benchmarked (None: the strategy's defaults)."""
    variance = {
        "degradation": "gaussian_noise_variance",
        "levels": {"low": NOISE_VARIANCE[0], "high": NOISE_VARIANCE[1]},
    }
    examples = {  # the adversarial examples of denoise and advfilter (the same files)
        "attack": EXAMPLE_ATTACK,
        "images": getattr(args, "images", None),
    }
    params: dict[str, dict[str, Any]] = {
        "standard": {},
        "constant": {"perturbation": variance},
        "incremental": {
            "perturbation": variance,
            "start": INCREMENTAL[0],
            "end": INCREMENTAL[1],
            "schedule": "linear",
        },
        "augment": {
            "perturbation": {
                "degradation": "gaussian_noise_255",
                "levels": augment_sigmas(args.copies),
            }
        },
        "stability": {"alpha": 0.01, "sigma": 0.04},
        "transfer": {"hidden": [256], "train": "head", "perturbation": variance},
        "finetune": {
            "perturbation": {
                "degradation": "gaussian_noise",
                "levels": {"low": FINETUNE_SIGMA[0], "high": FINETUNE_SIGMA[1]},
            },
            "layers": 1,
        },
        "adversarial": {"attack": f"pgd:eps={args.eps},steps={args.pgd_steps}", "share": 1.0},
        "quality": {"bins": bins_spec()},
        "joint_branches": {"bins": bins_spec(), "layers": 1, "trunk": "trained"},
        "denoise": {"loss": "image", "strengths": list(EXAMPLE_STRENGTHS), **examples},
        "advfilter": {
            "ynet_epochs": ADVFILTER_YNET_EPOCHS,
            "sl_strengths": list(EXAMPLE_STRENGTHS),
            "m_strengths": list(M_STRENGTHS),
            **examples,
        },
    }
    return params.get(name)


class ExampleRows:
    """Some rows of adversarial examples as a training split (the warm-up's examples)."""

    def __init__(self, examples: AdversarialExamples, rows: torch.Tensor) -> None:
        self.examples = examples
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu", order: torch.Tensor | None = None
    ) -> Any:
        rows = self.rows if order is None else self.rows[order]
        return self.examples.batches(batch_size, device, order=rows)


_EXAMPLES_CACHE: list[tempfile.TemporaryDirectory[str]] = []


def examples_cache() -> Path:
    """A temporary model-cache folder for the adversarial examples (one per process)."""
    if not _EXAMPLES_CACHE:
        _EXAMPLES_CACHE.append(tempfile.TemporaryDirectory(prefix="bench-strategies-"))
    return Path(_EXAMPLES_CACHE[0].name)


@dataclass
class Robust:
    """robustlab's loop: recipe, model, optimizer and strategy as the model cache builds them."""

    recipe: TrainingRecipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    strategy: Any
    epoch_index: int
    parent: nn.Module | None
    clean_split: Split
    clean_warm: Split
    train: SplitLike
    warm: Any
    stage: str = ""

    def epoch(self, split: SplitLike, batch_size: int, device: torch.device) -> int:
        return train_epochs(
            self.model,
            self.optimizer,
            split,
            self.recipe,
            start_epoch=self.epoch_index,
            end_epoch=self.epoch_index + 1,
            num_classes=self.strategy.outputs(10),
            strategy=self.strategy,
        )


def robust_for(
    name: str, params: dict[str, Any], args: argparse.Namespace, split: Split, warm: Split
) -> Robust:
    epochs, epoch_index = (INCREMENTAL[2], INCREMENTAL[3]) if name == "incremental" else (1, 0)
    stage = ""
    if name == "advfilter":  # a Y-Net epoch (epoch 0) or a fusion epoch (epoch 1) of two
        stage = getattr(args, "advfilter_stage", "ynet")
        epochs = ADVFILTER_YNET_EPOCHS + 1
        epoch_index = 0 if stage == "ynet" else ADVFILTER_YNET_EPOCHS
    arch, arch_params = ARCHITECTURES.get(name, (args.arch, {}))
    recipe = TrainingRecipe(
        architecture=arch,
        params=arch_params,
        dataset="bench",
        epochs=epochs,
        batch_size=args.batch,
        learning_rate=LEARNING_RATE,
        strategy=name,
        strategy_params=params,
        kind=TrainingRecipe.kind_of(name),  # type: ignore[arg-type]
    )
    strategy = recipe.build_strategy()
    parent = None
    if strategy.parent_role is not None:
        parent = build_model(TrainingRecipe(architecture=args.arch, dataset="bench", epochs=1))
    train: SplitLike = split
    warm_data: Any = warm
    if strategy.parent_use == "frozen":  # a denoiser: the parent is the frozen classifier
        assert parent is not None
        parent = parent.to(args.device).eval().requires_grad_(False)
        frozen = FrozenParent(
            parent, "bench-parent-e0", examples_cache(), split.fingerprint(), log=print
        )
        # Generates the adversarial examples (once per process: later calls load the files).
        train = strategy.prepare(frozen, split)
        assert isinstance(train, AdversarialExamples)
        n, w = len(split), len(warm)
        rows = [torch.arange(w) + s * n for s in range(len(train.strengths))]
        warm_data = ExampleRows(train, torch.cat(rows))  # the warm-up images' examples
    model = build_model(recipe, start=parent).to(args.device)
    optimizer = make_optimizer(recipe, model, strategy)
    return Robust(
        recipe,
        model,
        optimizer,
        strategy,
        epoch_index,
        parent,
        split,
        warm,
        train,
        warm_data,
        stage,
    )


# ------------------------------------------------------------------------------- measurement


@dataclass
class Result:
    name: str
    clean: int
    trained: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    load: str = ""
    note: str = ""

    def median(self, who: str) -> float:
        return statistics.median(self.seconds[who])

    def spread(self, who: str) -> float:
        return max(self.seconds[who]) / min(self.seconds[who])

    def ratio(self) -> float | None:
        if "plain" not in self.seconds:
            return None
        return self.median("plain") / self.median("robustlab")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def timed(run: Callable[[], int], device: torch.device) -> tuple[float, int]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    images = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, images


def label(name: str, robust: Robust) -> str:
    """The row's name: the strategy, and the stage timed for advfilter's fusion epoch."""
    return f"{name}:{robust.stage}" if robust.stage == "fusion" else name


#: The strategies that train a U-Net in front of a classifier (costly per image).
DENOISERS = ("denoise", "advfilter")


def measure(name: str, split: Split, warm: Split, args: argparse.Namespace) -> Result | None:
    params = strategy_params(name, args)
    note = ""
    if params is None:  # registered after this script was written: defaults, robustlab only
        try:
            create_strategy(name)
        except Exception as err:
            print(f"{name}: skipped, no plain loop and no default parameters ({err})")
            return None
        params, note = {}, "no plain loop written for it: robustlab alone, default parameters"
    robust = robust_for(name, params, args, split, warm)  # denoisers: examples generated here
    plain = plain_for(name, robust, args)
    runs: dict[str, Robust | Plain] = {"robustlab": robust}
    if plain is not None:
        runs["plain"] = plain
    result = Result(label(name, robust), len(split), load=load(), note=note)
    device = torch.device(args.device)
    for who, loop in runs.items():  # warm-up
        loop.epoch(loop.warm, args.batch, device)
        result.seconds[who] = []
    for repeat in range(args.repeats):
        order = list(runs.items())
        for who, loop in order if repeat % 2 == 0 else order[::-1]:
            seconds, images = timed(partial(loop.epoch, loop.train, args.batch, device), device)
            result.seconds[who].append(seconds)
            result.trained[who] = images
    if plain is not None and result.trained["robustlab"] != result.trained["plain"]:
        sys.exit(
            f"{name}: robustlab trained on {result.trained['robustlab']} images, the plain "
            f"loop on {result.trained['plain']}: the two loops do not do the same work"
        )
    return result


def check(name: str, split: Split, warm: Split, args: argparse.Namespace) -> str:
    """One robustlab step and one plain step from identical weights on a tiny batch.

    Both get the same batch, equally seeded generators and the same global seed (dropout);
    the losses of that step, and of a second step on the same batch after each optimizer has
    stepped once, must agree to ``--check-tolerance``. Returns a line; exits on a mismatch.
    """
    params = strategy_params(name, args)
    if params is None:
        return f"{name:<16} no plain loop"
    robust = robust_for(name, params, args, split, warm)
    plain = plain_for(name, robust, args)
    assert plain is not None
    device = torch.device(args.device)
    count = min(args.check_images, len(plain.train))
    index = torch.arange(count) * (len(plain.train) // count)  # every strength's rows
    x, y = fetch(plain.train, index, device)
    if isinstance(robust.train, AdversarialExamples):  # robustlab's own examples of the rows
        x_robust, y_robust = next(iter(robust.train.batches(count, device, order=y.cpu())))
    else:
        x_robust, y_robust = x, y
    losses: dict[str, list[float]] = {"robustlab": [], "plain": []}
    for _ in range(2):
        robust.strategy.train_mode(robust.model)
        context = StepContext(
            epoch=robust.epoch_index,
            total_epochs=robust.recipe.epochs,
            generator=torch.Generator(device=device).manual_seed(7),
            num_classes=robust.strategy.outputs(10),
        )
        torch.manual_seed(11)
        loss = robust.strategy.loss(robust.model, x_robust, y_robust, context)
        robust.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        robust.optimizer.step()
        losses["robustlab"].append(float(loss.detach()))
        plain.mode()
        torch.manual_seed(11)
        loss, _ = plain.loss(plain.model, x, y, torch.Generator(device=device).manual_seed(7))
        plain.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain.optimizer.step()
        losses["plain"].append(float(loss.detach()))
    differences = [abs(r - p) for r, p in zip(losses["robustlab"], losses["plain"], strict=True)]
    shown = ", ".join(
        f"{r:.7f} / {p:.7f}" for r, p in zip(losses["robustlab"], losses["plain"], strict=True)
    )
    line = (
        f"{label(name, robust):<16} losses robustlab / plain, steps 1 and 2: {shown}; "
        f"max |difference| {max(differences):.1e}"
    )
    if max(differences) > args.check_tolerance:
        sys.exit(f"{line}\n{name}: the two loops do not compute the same loss")
    return line


def verdict(result: Result, noisy: float) -> str:
    ratio = result.ratio()
    if ratio is None:
        return f"{result.name}: no plain loop to compare with ({result.note})"
    worst = max(result.spread(w) for w in result.seconds)
    caveat = (
        f" (spread {worst:.2f}: noisy; rerun when quieter, or --threads 1)" if worst > noisy else ""
    )
    if ratio >= 1.05:
        text = "faster than the plain loop"
    elif ratio >= 0.95:
        text = "on par with the plain loop"
    elif ratio >= 0.8:
        text = "slower than the plain loop, within 20 %"
    else:
        text = "MUCH SLOWER than the plain loop (< 0.8x): profile it (--profile)"
    return f"{result.name:<16} {ratio:.2f}x  {text}{caveat}"


def profile(name: str, split: Split, warm: Split, args: argparse.Namespace) -> None:
    """cProfile of one robustlab epoch of ``name`` and of its plain loop, top functions."""
    params = strategy_params(name, args) or {}
    robust = robust_for(name, params, args, split, warm)
    plain = plain_for(name, robust, args)
    device = torch.device(args.device)
    loops: dict[str, Robust | Plain | None] = {"robustlab": robust, "plain": plain}
    for who, loop in loops.items():
        if loop is None:
            continue
        loop.epoch(loop.warm, args.batch, device)
        profiler = cProfile.Profile()
        profiler.enable()
        loop.epoch(loop.train, args.batch, device)
        profiler.disable()
        print(f"\n=== cProfile of one {who} epoch of {name} (top 25 by cumulative time)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def dataset_split(args: argparse.Namespace) -> tuple[Split, str]:
    data_dir = (
        args.data_dir
        or os.environ.get("ROBUSTLAB_DATA")
        or str(REPO.parent / "shared" / "datasets")
    )
    try:
        data = load_dataset("mnist", data_dir=data_dir, download=False)
        source = f"mnist ({data_dir})"
    except Exception as err:
        print(f"MNIST not found in {data_dir} ({err}); using mnist-sample", file=sys.stderr)
        data, source = load_dataset("mnist-sample"), "mnist-sample (embedded)"
    split = data.train.subset(args.images)
    assert isinstance(split, Split)
    return split, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="strategies to run (default all)")
    parser.add_argument("--arch", default="lin2022_cnn")
    parser.add_argument("--images", type=int, default=1000, help="training images per epoch")
    parser.add_argument("--warmup", type=int, default=300, help="images of the warm-up pass")
    parser.add_argument(
        "--denoiser-images",
        type=int,
        default=None,
        help="training images per epoch of denoise and advfilter (default: --images)",
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--pgd-steps", type=int, default=7, help="PGD steps of adversarial")
    parser.add_argument("--eps", type=float, default=0.3, help="PGD L-inf radius")
    parser.add_argument("--copies", type=int, default=4, help="noisy copies of augment")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--noisy", type=float, default=1.3, help="spread that flags noise")
    parser.add_argument("--no-tune-allocator", action="store_true")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="STRATEGY",
        help="instead of the table, cProfile one epoch of STRATEGY each way",
    )
    parser.add_argument(
        "--advfilter-stage",
        choices=("ynet", "fusion"),
        default="ynet",
        help="advfilter's epoch timed: the Y-Net's (default) or the fusion's",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="instead of the table, compare one robustlab and one plain step's losses",
    )
    parser.add_argument("--check-images", type=int, default=8, help="the --check batch")
    parser.add_argument("--check-tolerance", type=float, default=1e-5)
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    load_builtin_strategies()
    names = args.only or STRATEGIES.names()
    unknown = sorted(set(names) - set(STRATEGIES.names()))
    if unknown:
        sys.exit(f"unknown strategies {unknown}; registered: {STRATEGIES.names()}")
    split, source = dataset_split(args)
    warm = split.subset(args.warmup)
    assert isinstance(warm, Split)
    if args.profile:
        profile(args.profile, split, warm, args)
        return
    if args.check:
        for name in names:
            print(check(name, split, warm, args), flush=True)
        print(f"every loss agrees to {args.check_tolerance:g}")
        return

    print(
        f"torch {torch.__version__} | python {platform.python_version()} | device {args.device} "
        f"| threads {torch.get_num_threads()} | cpus {os.cpu_count()} | allocator tuned {tuned}"
    )
    print(
        f"{args.arch}, Adam lr {LEARNING_RATE:g}, batch {args.batch}, {len(split):,} training "
        f"images of {source}, one epoch per run, median of {args.repeats} after a warm-up of "
        f"{args.warmup}; PGD-AT: eps {args.eps}, {args.pgd_steps} steps; augment: "
        f"{args.copies} copies"
    )
    load_before = load()
    print(f"load average before: {load_before}")
    results: list[Result] = []
    for name in names:
        own, own_warm = split, warm
        if name in DENOISERS and args.denoiser_images:
            # A U-Net epoch costs 15-30x a classifier's per image: fewer images keep the suite
            # within its time, at the same per-image cost.
            own = split.subset(args.denoiser_images)
            own_warm = warm.subset(min(args.warmup, args.denoiser_images))
            assert isinstance(own, Split) and isinstance(own_warm, Split)
        result = measure(name, own, own_warm, args)
        if result is not None:
            results.append(result)
            ratio = result.ratio()
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            print(f"  {name:<16} done, ratio {shown} (load {result.load})", flush=True)
    load_after = load()

    head = (
        f"{'strategy':<16}{'x imgs':>7}{'robustlab':>11}{'trained/s':>11}{'plain':>10}"
        f"{'trained/s':>11}{'ratio':>7}{'spread r/p':>12}"
    )
    print(f"\n{'':<23}{'--- img/s, clean / trained ---':^54}")
    print(head)
    print("-" * len(head))
    for r in results:
        rs = r.median("robustlab")
        factor = r.trained["robustlab"] / r.clean
        row = (
            f"{r.name:<16}{factor:>6.0f}x{r.clean / rs:>11.0f}{r.trained['robustlab'] / rs:>11.0f}"
        )
        if "plain" in r.seconds:
            ps = r.median("plain")
            ratio = r.ratio()
            assert ratio is not None
            row += (
                f"{r.clean / ps:>10.0f}{r.trained['plain'] / ps:>11.0f}{ratio:>6.2f}x"
                f"{r.spread('robustlab'):>6.2f}/{r.spread('plain'):.2f}"
            )
        else:
            row += f"{'-':>10}{'-':>11}{'-':>7}{r.spread('robustlab'):>6.2f}/-"
        print(row)
    print("-" * len(head))
    print("verdicts (ratio = robustlab img/s / plain img/s; > 1 is faster):")
    for r in results:
        print("  " + verdict(r, args.noisy))
    print(f"load average before: {load_before} | after: {load_after} (cpus {os.cpu_count()})")
    print(
        "(x imgs = images trained on per clean image; clean img/s = training-split images per "
        "second;\n trained/s = images the model trained on per second, copies included, PGD "
        "attack passes not;\n spread = max/min time over the repeats, robustlab/plain)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "source": source,
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "load": [load_before, load_after],
                    "results": [
                        {
                            "strategy": r.name,
                            "clean_images": r.clean,
                            "trained_images": r.trained,
                            "seconds": r.seconds,
                            "ratio": r.ratio(),
                            "load": r.load,
                            "note": r.note,
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
