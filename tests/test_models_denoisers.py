"""huang2021's denoisers: pixel-wise filtering, uncertainty maps, U-Net, heads, Y-Net, fusion, losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models.denoisers import (
    AdvFilter,
    Denoiser,
    FusionNet,
    UNet,
    YNet,
    image_loss,
    pixel_filter,
    semantic_loss,
    uncertainty_map,
    unet_downsamplings,
)

W = 4  # a tiny base width keeps every network test in milliseconds


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _identity_kernels(n: int, c: int, size: int, h: int, w: int) -> torch.Tensor:
    kernels = torch.zeros(n, c * size * size, h, w)
    for ch in range(c):
        kernels[:, ch * size * size + size * size // 2] = 1.0
    return kernels


# --- pixel_filter (Eq. 7) ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 5])
def test_identity_kernel_returns_the_input_exactly(size: int) -> None:
    x = torch.rand(2, 3, 6, 5, generator=_gen())
    assert torch.equal(pixel_filter(x, _identity_kernels(2, 3, size, 6, 5), size), x)


@pytest.mark.parametrize("size", [3, 5])
def test_uniform_kernel_is_a_box_filter_on_the_reflected_input(size: int) -> None:
    x = torch.rand(2, 3, 7, 6, generator=_gen(1))
    kernels = torch.full((2, 3 * size * size, 7, 6), 1.0 / size**2)
    pad = size // 2
    box = F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), size, stride=1)
    torch.testing.assert_close(pixel_filter(x, kernels, size), box, atol=1e-6, rtol=0)


def _naive_filter(x: torch.Tensor, kernels: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """The reference: explicit loops over every pixel and tap, borders by index arithmetic."""
    n, c, h, w = x.shape
    r = size // 2

    def index(i: int, length: int) -> int:
        if mode == "replicate":
            return min(max(i, 0), length - 1)
        if i < 0:
            return -i
        return 2 * (length - 1) - i if i >= length else i

    out = torch.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    total = 0.0
                    for di in range(size):
                        for dj in range(size):
                            tap = kernels[b, ch * size * size + di * size + dj, i, j]
                            pixel = x[b, ch, index(i + di - r, h), index(j + dj - r, w)]
                            total += float(tap * pixel)
                    out[b, ch, i, j] = total
    return out


def test_random_kernels_match_an_explicit_loop() -> None:
    x = torch.rand(2, 2, 5, 4, generator=_gen(2))
    kernels = torch.randn(2, 2 * 9, 5, 4, generator=_gen(3))
    expected = _naive_filter(x, kernels, 3, "reflect")
    torch.testing.assert_close(pixel_filter(x, kernels, 3), expected, atol=1e-5, rtol=1e-5)


def test_inputs_too_small_to_reflect_are_replicated() -> None:
    x = torch.rand(1, 1, 1, 3, generator=_gen(4))
    kernels = torch.randn(1, 9, 1, 3, generator=_gen(5))
    expected = _naive_filter(x, kernels, 3, "replicate")
    torch.testing.assert_close(pixel_filter(x, kernels, 3), expected, atol=1e-5, rtol=1e-5)


def test_pixel_filter_is_differentiable_in_images_and_kernels() -> None:
    x = torch.rand(1, 1, 4, 4, generator=_gen(6)).requires_grad_(True)
    kernels = torch.rand(1, 9, 4, 4, generator=_gen(7)).requires_grad_(True)
    pixel_filter(x, kernels, 3).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert kernels.grad is not None and bool(kernels.grad.abs().sum() > 0)


@pytest.mark.parametrize("size", [0, 2, -1, 1.0, True])
def test_bad_kernel_sizes_are_refused(size: object) -> None:
    with pytest.raises(InvalidParameterError, match="odd integer >= 1"):
        pixel_filter(torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4, 4), size)  # type: ignore[arg-type]


def test_mismatched_kernels_are_refused() -> None:
    with pytest.raises(
        InvalidParameterError, match=r"\(N, C\*size\*size, H, W\) = \(1, 27, 4, 4\)"
    ):
        pixel_filter(torch.rand(1, 3, 4, 4), torch.rand(1, 9, 4, 4), 3)


# --- uncertainty_map (Eq. 10) -----------------------------------------------------------------


def test_uncertainty_map_is_the_maximum_over_all_of_a_pixels_kernel_values() -> None:
    kernels = torch.zeros(1, 2 * 9, 2, 3)
    kernels[0, 3, 0, 0] = 0.7  # channel 0, tap 3
    kernels[0, 9 + 8, 0, 0] = 0.9  # channel 1, tap 8: the maximum at (0, 0)
    kernels[0, 0, 1, 2] = -0.5
    kernels[0, 10, 1, 2] = -0.2  # all values at (1, 2) negative but this one and the zeros
    u = uncertainty_map(kernels, channels=2, size=3)
    assert u.shape == (1, 1, 2, 3)
    expected = torch.tensor([[[[0.9, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    torch.testing.assert_close(u, expected)


def test_uncertainty_map_range_for_identity_and_normalised_kernels() -> None:
    assert torch.equal(
        uncertainty_map(_identity_kernels(2, 3, 3, 4, 4), 3, 3), torch.ones(2, 1, 4, 4)
    )
    logits = torch.randn(2, 3, 9, 4, 4, generator=_gen(8))
    kernels = logits.softmax(dim=2).reshape(2, 27, 4, 4)  # non-negative, each sums to one
    u = uncertainty_map(kernels, 3, 3)
    assert bool((u >= 1 / 9 - 1e-6).all()) and bool((u <= 1).all())


def test_uncertainty_map_refuses_kernels_of_the_wrong_count() -> None:
    with pytest.raises(InvalidParameterError, match=r"\(N, 27, H, W\)"):
        uncertainty_map(torch.rand(1, 9, 4, 4), channels=3, size=3)


# --- U-Net (Sec. 3.2) -------------------------------------------------------------------------


def test_depth_adapts_to_the_image_side() -> None:
    assert [unet_downsamplings(s) for s in (8, 16, 28, 30, 32, 64, 224)] == [1, 2, 2, 1, 3, 4, 4]


@pytest.mark.parametrize("side", [0, 6, 7, 27, 33])
def test_sides_that_cannot_halve_are_refused(side: int) -> None:
    with pytest.raises(InvalidParameterError, match="even side >= 8"):
        UNet(1, side, width=W)
    with pytest.raises(InvalidParameterError, match="even side >= 8"):
        Denoiser(1, side, width=W)


@pytest.mark.parametrize(("channels", "side", "bottleneck"), [(1, 28, 7), (3, 32, 4), (3, 64, 4)])
def test_unet_shapes(channels: int, side: int, bottleneck: int) -> None:
    net = UNet(channels, side, width=W, max_width=16)
    x = torch.rand(2, channels, side, side, generator=_gen())
    features = net.encoder(x)
    assert [f.shape[1] for f in features] == net.widths
    assert features[-1].shape[-1] == bottleneck
    assert max(net.widths) <= 16
    assert net(x).shape == (2, net.out_channels, side, side)


def test_unet_refuses_images_of_another_size() -> None:
    with pytest.raises(InvalidParameterError, match=r"\(N, 3, 32, 32\)"):
        UNet(3, 32, width=W)(torch.rand(1, 3, 28, 28))


# --- Denoiser (Eqs. 6, 7; Sec. 3.4) -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["filtering", "additive"])
@pytest.mark.parametrize(("channels", "side"), [(1, 28), (3, 32)])
def test_a_fresh_denoiser_returns_its_input(mode: str, channels: int, side: int) -> None:
    torch.manual_seed(0)
    net = Denoiser(channels, side, mode=mode, width=W)  # type: ignore[arg-type]
    x = torch.rand(2, channels, side, side, generator=_gen())
    denoised, prediction = net.forward_with_prediction(x)
    assert denoised.shape == x.shape
    taps = 9 if mode == "filtering" else 1
    assert prediction.shape == (2, channels * taps, side, side)
    torch.testing.assert_close(denoised, x, atol=1e-3, rtol=0)


def test_outputs_are_clamped_unless_asked_not_to() -> None:
    x = torch.rand(2, 1, 8, 8, generator=_gen())
    for clamp in (True, False):
        net = Denoiser(1, 8, mode="additive", width=W, clamp=clamp)
        nn.init.constant_(net.heads[0].bias, 2.0)
        out = net(x)
        assert bool((out <= 1).all()) is clamp


def test_unknown_mode_and_bad_heads_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="filtering, additive"):
        Denoiser(1, 8, mode="median", width=W)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="heads must be"):
        Denoiser(1, 8, heads=0, width=W)
    with pytest.raises(InvalidParameterError, match=r"0\.\.2"):
        Denoiser(1, 8, heads=3, width=W, default_head=3)


def test_several_heads_need_an_explicit_or_default_head() -> None:
    x = torch.rand(2, 1, 8, 8, generator=_gen())
    net = Denoiser(1, 8, heads=3, width=W)
    with pytest.raises(InvalidParameterError, match="no default_head"):
        net(x)
    with pytest.raises(InvalidParameterError, match=r"0\.\.2"):
        net(x, head=3)
    for i, head in enumerate(net.heads):
        nn.init.normal_(head.weight, std=0.1, generator=_gen(i))
    all_heads = net.forward_all_heads(x)
    assert all_heads.shape == (3, 2, 1, 8, 8)
    for i in range(3):
        torch.testing.assert_close(net(x, head=i), all_heads[i])
    net.default_head = 2
    torch.testing.assert_close(net(x), all_heads[2])
    assert not torch.equal(all_heads[0], all_heads[2])


def test_a_training_step_on_one_head_leaves_the_other_heads_unchanged() -> None:
    torch.manual_seed(0)
    net = Denoiser(1, 8, heads=3, width=W)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    clean = torch.rand(2, 1, 8, 8, generator=_gen(1))
    noisy = (clean + 0.1 * torch.randn(2, 1, 8, 8, generator=_gen(2))).clamp(0, 1)
    image_loss(clean, net(noisy, head=1)).backward()
    assert all(p.grad is None for p in net.heads[0].parameters())
    assert all(p.grad is None for p in net.heads[2].parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.unet.parameters())
    with torch.no_grad():  # a plain SGD step (torch.optim's first import costs a second)
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    for name, p in net.named_parameters():
        changed = not torch.equal(p, before[name])
        if name.startswith(("heads.0.", "heads.2.")):
            assert not changed, name
        elif name.startswith("heads.1."):
            assert changed, name
    assert any(not torch.equal(p, before[f"unet.{n}"]) for n, p in net.unet.named_parameters())


# --- Y-Net, fusion, AdvFilter (Sec. 4) --------------------------------------------------------


def _has_grad(module: nn.Module) -> bool:
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())


def _no_grad(module: nn.Module) -> bool:
    return all(p.grad is None for p in module.parameters())


@pytest.mark.parametrize("which", ["sl", "m"])
def test_a_loss_on_one_decoder_reaches_only_the_encoder_and_that_decoder(which: str) -> None:
    torch.manual_seed(0)
    net = YNet(1, 8, width=W)
    x = torch.rand(2, 1, 8, 8, generator=_gen())
    out = net(x)
    denoised = out.denoised_sl if which == "sl" else out.denoised_m
    image_loss(x, denoised * 0.9).backward()
    trained, other = (
        (net.decoder_sl, net.decoder_m) if which == "sl" else (net.decoder_m, net.decoder_sl)
    )
    assert _has_grad(net.encoder)
    assert _has_grad(trained.blocks) and _has_grad(trained.head)
    assert _no_grad(other)


def test_ynet_shapes_for_both_dataset_sizes() -> None:
    for channels, side in [(1, 28), (3, 32)]:
        out = YNet(channels, side, width=W, kernel_size=5)(torch.rand(2, channels, side, side))
        assert out.denoised_sl.shape == out.denoised_m.shape == (2, channels, side, side)
        assert out.kernels_sl.shape == out.kernels_m.shape == (2, channels * 25, side, side)


def test_fusion_net_gives_a_weight_map_in_the_open_unit_interval() -> None:
    w = FusionNet(hidden=4)(torch.randn(3, 2, 5, 5, generator=_gen()))
    assert w.shape == (3, 1, 5, 5)
    assert bool(((w > 0) & (w < 1)).all())
    assert len([m for m in FusionNet().modules() if isinstance(m, nn.Conv2d)]) == 6
    with pytest.raises(InvalidParameterError, match=r"\(N, 2, H, W\)"):
        FusionNet()(torch.rand(1, 3, 4, 4))


def _spread_decoders(model: AdvFilter) -> None:
    """Make the two fresh decoders differ: φ_sl stays the identity, φ_m becomes a box filter."""
    head = model.ynet.decoder_m.head
    nn.init.constant_(head.bias, 1.0 / 9)


def test_the_fused_output_lies_between_the_two_decoders_outputs() -> None:
    torch.manual_seed(0)
    model = AdvFilter(3, 8, width=W, fusion_hidden=4)
    _spread_decoders(model)
    x = torch.rand(2, 3, 8, 8, generator=_gen())
    parts = model.forward_parts(x)
    lo = torch.minimum(parts.denoised_sl, parts.denoised_m)
    hi = torch.maximum(parts.denoised_sl, parts.denoised_m)
    assert bool((parts.denoised >= lo - 1e-6).all()) and bool((parts.denoised <= hi + 1e-6).all())
    assert bool(((parts.weight > 0) & (parts.weight < 1)).all())
    assert parts.uncertainty_sl.shape == parts.uncertainty_m.shape == (2, 1, 8, 8)
    torch.testing.assert_close(model(x), parts.denoised)
    assert bool((parts.denoised_sl - parts.denoised_m).abs().max() > 0.01)


@pytest.mark.parametrize(("bias", "winner"), [(30.0, "sl"), (-30.0, "m")])
def test_the_weight_map_weighs_the_small_and_large_decoder(bias: float, winner: str) -> None:
    model = AdvFilter(1, 8, width=W, fusion_hidden=4)
    _spread_decoders(model)
    last = model.fusion.layers[-2]
    nn.init.zeros_(last.weight)
    nn.init.constant_(last.bias, bias)  # W = sigmoid(bias): 1 for +30, 0 for -30
    parts = model.forward_parts(torch.rand(2, 1, 8, 8, generator=_gen()))
    expected = parts.denoised_sl if winner == "sl" else parts.denoised_m
    torch.testing.assert_close(parts.denoised, expected, atol=1e-6, rtol=0)


# --- losses (Eqs. 4, 5) -----------------------------------------------------------------------


def _classifier() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 5)
    ).eval()


def test_image_loss_is_the_mean_absolute_difference() -> None:
    a, b = torch.rand(2, 3, 4, 4, generator=_gen(1)), torch.rand(2, 3, 4, 4, generator=_gen(2))
    torch.testing.assert_close(image_loss(a, b), torch.mean(torch.abs(a - b)))
    with pytest.raises(InvalidParameterError, match="differ in shape"):
        image_loss(a, b[:1])


@pytest.mark.parametrize(("layer", "depth"), [("1", 2), ("3", 4), ("", 4)])
def test_semantic_loss_is_the_l1_of_the_layers_outputs(layer: str, depth: int) -> None:
    net = _classifier()
    clean = torch.rand(2, 1, 4, 4, generator=_gen(1))
    denoised = torch.rand(2, 1, 4, 4, generator=_gen(2))
    with torch.no_grad():
        expected = (net[:depth](clean) - net[:depth](denoised)).abs().mean()
    torch.testing.assert_close(semantic_loss(net, layer, clean, denoised), expected)
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("frozen", [True, False])
def test_semantic_loss_trains_the_denoised_input_never_the_classifier(frozen: bool) -> None:
    net = _classifier()
    net.requires_grad_(not frozen)
    clean = torch.rand(2, 1, 4, 4, generator=_gen(1))
    denoised = torch.rand(2, 1, 4, 4, generator=_gen(2)).requires_grad_(True)
    semantic_loss(net, "1", clean, denoised).backward()
    assert denoised.grad is not None and bool(denoised.grad.abs().sum() > 0)
    assert all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad is not frozen for p in net.parameters())


def test_semantic_loss_trains_a_denoiser_in_front_of_the_classifier() -> None:
    net = _classifier().requires_grad_(False)
    denoiser = Denoiser(1, 8, width=W)
    clean = torch.rand(2, 1, 8, 8, generator=_gen(1))
    classifier = nn.Sequential(nn.AvgPool2d(2), net)  # 8 x 8 -> the classifier's 4 x 4
    semantic_loss(classifier, "1.1", clean, denoiser(clean * 0.5)).backward()
    assert _has_grad(denoiser.heads[0])


def test_an_unknown_layer_is_refused_with_the_valid_names() -> None:
    net = _classifier()
    with pytest.raises(InvalidParameterError, match=r"unknown layer 'relu'.*valid: 0, 1, 2, 3"):
        semantic_loss(net, "relu", torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))


def test_the_hook_is_removed_even_when_the_classifier_fails() -> None:
    net = _classifier()
    with pytest.raises(RuntimeError):
        semantic_loss(net, "1", torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))
    assert all(not m._forward_hooks for m in net.modules())


def test_a_layer_that_runs_twice_is_refused() -> None:
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(1, 1, 1), relu, nn.Conv2d(1, 1, 1), relu)
    with pytest.raises(InvalidParameterError, match="ran 2 times"):
        semantic_loss(net, "1", torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))
    assert all(not m._forward_hooks for m in net.modules())
