"""Adaptive filter selection: each image through the filter of its detected kind; BPDA gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.defend import create_defense
from robustlab.errors import InvalidParameterError
from robustlab.models.adaptive_filter import AdaptiveFilter


class ImpulseDetector(nn.Module):
    """Kind 1 (impulse) when many pixels are exactly 0 or 1, kind 0 (clean) otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extreme = ((x == 0) | (x == 1)).float().flatten(1).mean(dim=1)
        return torch.stack([0.05 - extreme, extreme - 0.05], dim=1) * 100


def _batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(4, 1, 8, 8, generator=g)
    noisy = x.clone()
    mask = torch.rand(4, 1, 8, 8, generator=g) < 0.2
    noisy[mask] = (torch.rand(int(mask.sum()), generator=g) < 0.5).float()
    return torch.cat([x[:2], noisy[2:]])


def test_impulse_noise_goes_to_the_median_and_clean_images_to_no_filter() -> None:
    median = create_defense("median", size=3)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    pipeline = AdaptiveFilter(ImpulseDetector(), classifier, [create_defense("none"), median])
    x = _batch()
    assert pipeline.route(x).tolist() == [0, 0, 1, 1]
    cleaned = pipeline.clean(x)
    assert torch.equal(cleaned[:2], x[:2])
    assert torch.equal(cleaned[2:], median(x[2:]))
    with torch.no_grad():
        torch.testing.assert_close(pipeline(x), classifier(cleaned))


def test_gradients_flow_through_a_non_differentiable_filter_by_bpda() -> None:
    jpeg = create_defense("jpeg", quality=10)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    pipeline = AdaptiveFilter(ImpulseDetector(), classifier, [create_defense("none"), jpeg])
    x = _batch().requires_grad_(True)
    out = pipeline(x)
    with torch.no_grad():
        torch.testing.assert_close(out, pipeline(x.detach()))
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert bool((grad[2:].abs().flatten(1).sum(dim=1) > 0).all())


def test_detector_and_filters_must_agree_in_number() -> None:
    with pytest.raises(InvalidParameterError, match="at least one filter"):
        AdaptiveFilter(ImpulseDetector(), nn.Identity(), [])
    pipeline = AdaptiveFilter(ImpulseDetector(), nn.Identity(), [create_defense("none")] * 3)
    for call in (pipeline.route, pipeline, lambda x: pipeline(x.requires_grad_(True))):
        with pytest.raises(InvalidParameterError, match="map one filter to every kind"):
            call(_batch())
