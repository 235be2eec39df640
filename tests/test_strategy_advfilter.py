"""``advfilter``: the Y-Net's decoders learn from their own strengths, then the fusion alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models.denoisers import AdvFilter
from robustlab.train.adversarial_examples import AdversarialExamples
from robustlab.train.strategy import StepContext, create_strategy


def _examples(strengths: tuple[float, ...], n: int = 3) -> AdversarialExamples:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(n, 1, 28, 28, generator=g)
    deltas = [
        ((torch.rand(n, 1, 28, 28, generator=g) * 2 - 1) * s).to(torch.float16) for s in strengths
    ]
    return AdversarialExamples(
        clean, torch.arange(n) % 10, deltas, strengths, [0.5] * len(strengths)
    )


def _setup(epoch: int) -> tuple[object, AdvFilter, AdversarialExamples, StepContext]:
    examples = _examples((1e-4, 0.5))
    strategy = create_strategy(
        "advfilter", ynet_epochs=1, sl_strengths=[1e-4, 0.5], m_strengths=[0.5]
    )
    torch.manual_seed(0)
    strategy.examples = examples  # type: ignore[attr-defined]
    strategy.classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()  # type: ignore[attr-defined]
    torch.manual_seed(0)
    net = AdvFilter(1, 28, width=4, fusion_hidden=4)
    context = StepContext(epoch=epoch, total_epochs=2, generator=torch.Generator(), num_classes=10)
    return strategy, net, examples, context


def _gradient(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize(("rows", "m_learns"), [([0, 1, 2], False), ([3, 4, 5], True)])
def test_each_decoder_learns_only_from_its_domains_strengths(
    rows: list[int], m_learns: bool
) -> None:
    strategy, net, examples, context = _setup(epoch=0)
    r = torch.tensor(rows)  # rows 0-2: eps 1e-4 (sl only); rows 3-5: eps 0.5 (both)
    strategy.loss(net, examples.adversarial(r), r, context).backward()  # type: ignore[attr-defined]
    assert _gradient(net.ynet.decoder_sl) > 0 and _gradient(net.ynet.encoder) > 0
    assert (_gradient(net.ynet.decoder_m) > 0) is m_learns
    assert _gradient(net.fusion) == 0  # stage 1 never touches the fusion


def test_the_second_stage_trains_the_fusion_on_the_classifiers_loss_only() -> None:
    strategy, net, examples, context = _setup(epoch=1)
    r = torch.arange(6)
    loss = strategy.loss(net, examples.adversarial(r), r, context)  # type: ignore[attr-defined]
    parts = net.forward_parts(examples.adversarial(r))
    expected = nn.functional.cross_entropy(
        strategy.classifier(parts.denoised),
        examples.label(r),  # type: ignore[attr-defined]
    )
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert _gradient(net.fusion) > 0 and _gradient(net.ynet) == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [({"ynet_epochs": 0}, "ynet_epochs"), ({"m_strengths": []}, "m_strengths must be")],
)
def test_bad_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        create_strategy("advfilter", **params)
