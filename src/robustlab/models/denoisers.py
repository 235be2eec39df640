"""huang2021's pixel denoisers (AdvFilter): U-Net, additive and filtering heads, Y-Net, fusion.

huang2021 ("AdvFilter: Predictive Perturbation-aware Filtering against Adversarial Attack via
Multi-domain Learning") put a learned denoiser ``D(φ(Î), Î)`` (Eq. 3) in front of a frozen
classifier. This module holds the network building blocks; training, caching and study
integration live elsewhere.

- :func:`pixel_filter`: Eq. 7, every pixel filtered by its own predicted K x K kernel.
- :func:`uncertainty_map`: Eq. 10, the max pooling over each pixel's kernel values.
- :class:`UNet`: φ of Sec. 3.2, eight blocks of three 3x3 convolutions with ReLU, five in the
  encoder and three in the decoder, skips from blocks 2, 3, 4 to the last three blocks.
- :class:`Denoiser`: φ plus one output layer, ``"additive"`` (Eq. 6) or ``"filtering"``
  (Eq. 7), or several output layers on one U-Net (the multi-head model of Sec. 3.4).
- :class:`YNet`: one encoder and two filtering decoders, φ_sl and φ_m (Sec. 4.1, Eqs. 8-9).
- :class:`FusionNet` and :class:`AdvFilter`: uncertainty-aware fusion (Eqs. 11-12).
- :func:`image_loss` and :func:`semantic_loss`: Eqs. 4 and 5.
- ``EPSILONS_ALL``, ``EPSILONS_PER_HEAD``, ``EPSILONS_MEDIAN_DECODER``: the PGD strengths the
  paper trains each network (or head, or decoder) on (Secs. 3.2, 3.4, 4.2), for trainers.

**Where the paper is silent, or departs from our data, our choices:**

- *Depth adapts to the image side.* The paper's 224 x 224 input reaches a 14 x 14 bottleneck,
  so its five encoder blocks are separated by four 2x2 downsamplings. We take as many
  halvings as the side allows, at most four, while the side stays an integer and at least 4
  (:func:`unet_downsamplings`): 28 -> 14 -> 7 (two), 32 -> 16 -> 8 -> 4 (three), 224 -> 14
  (four, the paper's). Sides that cannot halve once (odd sides, sides under 8) are refused.
  With fewer than four halvings the poolings sit before the *deepest* blocks (before blocks
  5, 4, 3 in that order), so the shallow blocks and the decoder's last block keep the full
  resolution. The decoder mirrors the encoder: block 6 joins block 4's output, block 7 block
  3's, block 8 block 2's ("respectively" read as the U-Net mirror; the other reading does not
  fit the resolutions). Where block 2 is at half resolution (four halvings, as in the paper)
  a final 2x2 up-convolution restores the full side before the output layer.
- *U-Net details from U-Net [27], which the paper cites:* 2x2 max pooling down, 2x2 transposed
  convolution up (to the skip's width), concatenation with the skip. Convolutions are padded
  (3x3, padding 1) so sides are kept. Widths: ``width`` channels at full resolution, doubling
  with every downsampling, capped at ``max_width`` (512, the paper's bottleneck width).
- *Output layer:* a 1x1 convolution on the decoder's last feature map (the paper says only
  "the final output layer"). It predicts ``C*K*K`` kernel values per pixel (filtering) or
  ``C`` values, the inverse perturbation (additive). Kernels are used as predicted: not
  normalised (no softmax), as Eq. 7 states none.
- *Per-channel kernels:* the paper's "K x K x 3" kernel per pixel is read as one K x K kernel
  per colour channel (depthwise), since each channel of the output needs its own value.
- *Initialisation: training starts from "do nothing".* The output layer's weights are drawn
  small (std 1e-4) and its biases make a fresh filtering head predict the identity kernel
  (centre tap 1) and a fresh additive head a zero perturbation. A fresh denoiser thus returns
  (almost exactly) its input: the classifier keeps its accuracy, and most of the paper's
  training strengths are small enough that the identity is already close to the answer, so
  training only learns the departure from it instead of first undoing random kernels that
  destroy the image. The weights are small rather than zero so that the U-Net receives a
  gradient from the first step.
- *Borders:* :func:`pixel_filter` pads by reflection (replicate for inputs too small to
  reflect, a side not larger than K // 2).
- *Clamping:* outputs are clamped to ``[0, 1]``, the classifier's input range, unless
  ``clamp=False``. The clamp's gradient is zero where it cuts; a near-identity start keeps
  outputs in range, and a trainer may construct with ``clamp=False``.
- *Multi-head inference:* the paper (Sec. 3.4, Table 3) evaluates every head separately and
  states no rule that picks or combines heads at test time (it concludes that the right head
  depends on the unknown strength, which motivates AdvFilter). So ``head=None`` with several
  heads uses ``default_head`` when it was given and is refused otherwise;
  :meth:`Denoiser.forward_all_heads` gives Table 3's per-head outputs in one pass.
- *Fusion network:* six 3x3 convolutions (padding 1, ReLU between, ``hidden`` channels, one
  output channel) and a sigmoid; widths are not given in the paper. Its input is the
  concatenation ``[U_sl, U_m]`` (Eq. 11) and ``W`` weighs φ_sl's output, ``1 - W`` φ_m's
  (Eq. 12).
- *Losses:* Eqs. 4 and 5 write an L1 norm; we take the mean absolute difference (the sum over
  pixels divided by their number), so the loss does not scale with the batch or image size.

The paper trains φ_m (the decoder "for median strengths") on the three *largest* strengths
(Sec. 4.2, like Filt(L*_img) of Sec. 3.3); ``EPSILONS_MEDIAN_DECODER`` follows the text.

Example:
    >>> import torch
    >>> model = AdvFilter(in_channels=1, image_size=28, width=4)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> model(x).shape
    torch.Size([2, 1, 28, 28])
    >>> bool(image_loss(x, Denoiser(1, 28, width=4)(x)) < 1e-2)  # a fresh denoiser ~ identity
    True
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import InvalidParameterError
from robustlab.models.base import MODELS

DenoiseMode = Literal["filtering", "additive"]

# PGD L-inf strengths for [0, 1] images. Sec. 3.2: the twelve training strengths.
EPSILONS_ALL: tuple[float, ...] = (
    1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2, 5e-2, 1e-1, 3e-1, 5e-1,
)  # fmt: skip
# Sec. 3.4: head_i (index i - 1) is updated on {1e(i-5), 3e(i-5), 5e(i-5)}.
EPSILONS_PER_HEAD: tuple[tuple[float, ...], ...] = (
    (1e-4, 3e-4, 5e-4),
    (1e-3, 3e-3, 5e-3),
    (1e-2, 3e-2, 5e-2),
    (1e-1, 3e-1, 5e-1),
)
# Sec. 4.2: φ_sl is updated on EPSILONS_ALL, φ_m on these; the fusion on EPSILONS_ALL.
EPSILONS_MEDIAN_DECODER: tuple[float, ...] = (1e-1, 3e-1, 5e-1)

_ENCODER_BLOCKS = 5
_SKIPS = (3, 2, 1)  # encoder block indices (blocks 4, 3, 2) joined by decoder blocks 6, 7, 8
_MAX_DOWNSAMPLINGS = 4  # the paper's 224 -> 14
_MIN_BOTTLENECK = 4
_OUTPUT_INIT_STD = 1e-4
_MODES = ("filtering", "additive")


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_kernel_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise InvalidParameterError(
            f"kernel size must be an odd integer >= 1 (1, 3, 5, ...) so that each kernel is "
            f"centred on its pixel, got {size!r}"
        )
    return size


def _check_images(x: torch.Tensor, channels: int, image_size: int, who: str) -> None:
    expected = (channels, image_size, image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise InvalidParameterError(
            f"{who} was built for images (N, {channels}, {image_size}, {image_size}), got shape "
            f"{tuple(x.shape)}; build it with the data's in_channels and image_size"
        )


def pixel_filter(x: torch.Tensor, kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Filter every pixel with its own kernel (Eq. 7, ``Î ⊛ φ(Î)``).

    Output pixel ``(c, i, j)`` is the dot product of channel ``c``'s kernel at ``(i, j)`` with
    the ``size x size`` neighbourhood of ``x[:, c]`` centred on ``(i, j)``. The input is
    padded by reflection (``size // 2`` pixels; by replication when a side is not larger than
    ``size // 2``, too small to reflect). Vectorised with ``unfold``; differentiable in both
    ``x`` and ``kernels``.

    Args:
        x: images ``(N, C, H, W)`` (``[0, 1]`` for a classifier's input).
        kernels: ``(N, C*size*size, H, W)``; channel ``c``'s kernel occupies channels
            ``c*size*size`` to ``(c+1)*size*size - 1``, its taps row by row.
        size: the kernel side K, odd.

    Returns:
        The filtered images ``(N, C, H, W)``, not clamped.

    Raises:
        InvalidParameterError: for an even or non-positive ``size`` or mismatched shapes.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 5, 5)
        >>> identity = torch.zeros(2, 3 * 9, 5, 5)
        >>> identity[:, 4::9] = 1.0  # each channel's centre tap
        >>> torch.equal(pixel_filter(x, identity, 3), x)
        True
    """
    size = _check_kernel_size(size)
    if x.dim() != 4:
        raise InvalidParameterError(f"pixel_filter needs images (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    taps = size * size
    if tuple(kernels.shape) != (n, c * taps, h, w):
        raise InvalidParameterError(
            f"kernels must have shape (N, C*size*size, H, W) = {(n, c * taps, h, w)} for images "
            f"{tuple(x.shape)} and size {size}, got {tuple(kernels.shape)}"
        )
    if size == 1:
        return x * kernels
    pad = size // 2
    mode = "reflect" if pad < h and pad < w else "replicate"
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode=mode), size)
    patches = patches.reshape(n, c, taps, h, w)
    return (patches * kernels.reshape(n, c, taps, h, w)).sum(dim=2)


def uncertainty_map(kernels: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """The uncertainty map of Eq. 10: the maximum of each pixel's ``C*K*K`` kernel values.

    ``U(Î)_{m,n} = maxpool(φ(Î)_{m,n})``, a max pooling over all the kernel values predicted
    for pixel ``(m, n)`` (every channel's taps together). Fig. 2/4: near-identity kernels
    (small perturbations) give values near 1, spread-out kernels (strong smoothing) lower ones.

    Value range: that of the kernel values, which are not normalised, so any real number in
    general. An identity kernel gives exactly 1; non-negative kernels that sum to one give
    values in ``[1/K², 1]``.

    Args:
        kernels: ``(N, channels*size*size, H, W)``, as for :func:`pixel_filter`.
        channels: the image channels C.
        size: the kernel side K, odd.

    Returns:
        ``(N, 1, H, W)``, differentiable in ``kernels``.

    Raises:
        InvalidParameterError: for bad ``channels`` or ``size``, or kernels of another shape.

    Example:
        >>> import torch
        >>> kernels = torch.full((1, 9, 2, 2), 1 / 9)
        >>> kernels[0, 4, 0, 0] = 1.0
        >>> uncertainty_map(kernels, channels=1, size=3)[0, 0]
        tensor([[1.0000, 0.1111],
                [0.1111, 0.1111]])
    """
    channels = _check_int("channels", channels)
    size = _check_kernel_size(size)
    if kernels.dim() != 4 or kernels.shape[1] != channels * size * size:
        raise InvalidParameterError(
            f"kernels must have shape (N, {channels * size * size}, H, W) for {channels} "
            f"channel(s) and size {size}, got {tuple(kernels.shape)}"
        )
    return kernels.amax(dim=1, keepdim=True)


def unet_downsamplings(image_size: int) -> int:
    """How many 2x2 downsamplings the U-Net makes for a square side (see the module docstring).

    As many halvings as keep the side an integer of at least 4, at most four (the paper's
    224 -> 14).

    Args:
        image_size: the square input side.

    Returns:
        The number of downsamplings, 1 to 4.

    Raises:
        InvalidParameterError: for a side that cannot halve once (odd, or under 8).

    Example:
        >>> [unet_downsamplings(s) for s in (28, 32, 224)]
        [2, 3, 4]
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise InvalidParameterError(f"image_size must be an integer, got {image_size!r}")
    depth, side = 0, image_size
    while depth < _MAX_DOWNSAMPLINGS and side % 2 == 0 and side // 2 >= _MIN_BOTTLENECK:
        side //= 2
        depth += 1
    if depth == 0:
        raise InvalidParameterError(
            f"the U-Net needs a square side it can halve at least once to a side >= "
            f"{_MIN_BOTTLENECK}: an even side >= {2 * _MIN_BOTTLENECK} (e.g. 28 or 32), got "
            f"{image_size}"
        )
    return depth


def _plan(image_size: int, width: int, max_width: int) -> tuple[list[int], list[int]]:
    """The resolution level (downsamplings so far) and width of each encoder block."""
    depth = unet_downsamplings(image_size)
    levels = [max(0, b - (_ENCODER_BLOCKS - 1 - depth)) for b in range(_ENCODER_BLOCKS)]
    widths = [min(width * 2**level, max_width) for level in levels]
    return levels, widths


def _block(cin: int, cout: int) -> nn.Sequential:
    """Three 3x3 convolutions with ReLU (Sec. 3.2)."""
    layers: list[nn.Module] = []
    for i in range(3):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Encoder(nn.Module):
    """Blocks 1-5; returns every block's output (the decoder needs blocks 2, 3, 4 and 5)."""

    def __init__(self, in_channels: int, levels: list[int], widths: list[int]) -> None:
        super().__init__()
        self.pooled = [b > 0 and levels[b] > levels[b - 1] for b in range(_ENCODER_BLOCKS)]
        self.pool = nn.MaxPool2d(2)
        self.blocks = nn.ModuleList(
            _block(in_channels if b == 0 else widths[b - 1], widths[b])
            for b in range(_ENCODER_BLOCKS)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        h = x
        for pooled, block in zip(self.pooled, self.blocks, strict=True):
            h = block(self.pool(h) if pooled else h)
            outputs.append(h)
        return outputs


class _Decoder(nn.Module):
    """Blocks 6-8 joined to encoder blocks 4, 3, 2; ends at full resolution."""

    def __init__(self, levels: list[int], widths: list[int]) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        cin, level = widths[-1], levels[-1]
        for skip in _SKIPS:
            if levels[skip] < level:
                self.ups.append(nn.ConvTranspose2d(cin, widths[skip], 2, stride=2))
                cin = widths[skip]
            else:
                self.ups.append(nn.Identity())
            self.blocks.append(_block(cin + widths[skip], widths[skip]))
            cin, level = widths[skip], levels[skip]
        self.final_up: nn.Module = (
            nn.ConvTranspose2d(cin, cin, 2, stride=2) if level > 0 else nn.Identity()
        )
        self.out_channels = cin

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        h = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, _SKIPS, strict=True):
            h = block(torch.cat([up(h), features[skip]], dim=1))
        out: torch.Tensor = self.final_up(h)
        return out


class UNet(nn.Module):
    """φ of Sec. 3.2: a U-Net of eight blocks whose depth adapts to the image side.

    Blocks 1-5 (encoder) and 6-8 (decoder) are three 3x3 convolutions with ReLU each; blocks
    2, 3, 4 are joined to blocks 8, 7, 6. See the module docstring for how the number of
    downsamplings adapts (``depth``) and where the poolings sit. ``forward`` returns the
    decoder's final feature map at full resolution, ``(N, out_channels, H, W)``, on which
    output layers (heads) are attached; ``encoder`` and ``decoder`` are the two halves.

    Args:
        in_channels: image channels.
        image_size: square input side; even and at least 8 (28, 32, 224, ...).
        width: channels of the full-resolution blocks, doubled per downsampling.
        max_width: the cap on any block's channels (512, the paper's bottleneck width).

    Raises:
        InvalidParameterError: for an unsupported side or a non-positive width.

    Example:
        >>> import torch
        >>> net = UNet(in_channels=3, image_size=32, width=8)
        >>> net.depth, net.widths
        (3, [8, 8, 16, 32, 64])
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 8, 32, 32])
    """

    def __init__(
        self, in_channels: int = 3, image_size: int = 32, width: int = 32, max_width: int = 512
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        self.depth = unet_downsamplings(image_size)
        self.image_size = image_size
        _check_int("width", width)
        _check_int("max_width", max_width)
        levels, self.widths = _plan(image_size, width, max_width)
        self.encoder = _Encoder(in_channels, levels, self.widths)
        self.decoder = _Decoder(levels, self.widths)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's final feature map ``(N, out_channels, H, W)`` for images ``x``."""
        _check_images(x, self.in_channels, self.image_size, "this U-Net")
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


def _output_layer(features: int, channels: int, mode: str, kernel_size: int) -> nn.Conv2d:
    """A 1x1 output layer that starts as (almost) the identity denoiser (module docstring)."""
    taps = kernel_size * kernel_size
    conv = nn.Conv2d(features, channels * taps if mode == "filtering" else channels, 1)
    nn.init.normal_(conv.weight, std=_OUTPUT_INIT_STD)
    bias = conv.bias
    assert bias is not None
    nn.init.zeros_(bias)
    if mode == "filtering":
        with torch.no_grad():
            bias.view(channels, taps)[:, taps // 2] = 1.0
    return conv


def _denoise(
    x: torch.Tensor, prediction: torch.Tensor, mode: str, kernel_size: int, clamp: bool
) -> torch.Tensor:
    """Eq. 6 (``x + φ``) or Eq. 7 (``x ⊛ φ``), then the optional clamp to ``[0, 1]``."""
    out = pixel_filter(x, prediction, kernel_size) if mode == "filtering" else x + prediction
    return out.clamp(0.0, 1.0) if clamp else out


@MODELS.register("huang2021_denoiser", tags=("huang2021", "denoiser"))
class Denoiser(nn.Module):
    """An additive (Eq. 6) or filtering (Eq. 7) pixel denoiser, with one head or several.

    One :class:`UNet` and ``heads`` output layers (Sec. 3.4: "The model has the same U-Net and
    each head has the same architecture as the final output layer"). A filtering head predicts
    ``C*K*K`` kernel values per pixel for :func:`pixel_filter`; an additive head predicts the
    inverse perturbation ``-δ``, added to the input. A fresh denoiser returns (almost) its
    input and outputs are clamped to ``[0, 1]`` unless ``clamp=False`` (module docstring).

    Heads are indexed from 0: the paper's head_i is index ``i - 1``, trained on the strengths
    ``EPSILONS_PER_HEAD[i - 1]``. ``head=None`` means the only head, or ``default_head`` when
    there are several; the paper gives no test-time rule for several heads, so without
    ``default_head`` the caller must choose.

    Args:
        in_channels: image channels C.
        image_size: square input side (see :class:`UNet`).
        mode: ``"filtering"`` or ``"additive"``.
        kernel_size: the filter side K (odd; filtering only).
        heads: the number of output layers on the shared U-Net.
        width: the U-Net's base width.
        max_width: the U-Net's width cap.
        default_head: the head ``head=None`` uses when there are several.
        clamp: clamp outputs to ``[0, 1]``.

    Raises:
        InvalidParameterError: for an unknown mode or bad sizes, head counts or indices.

    Example:
        >>> import torch
        >>> net = Denoiser(in_channels=3, image_size=32, width=8)
        >>> x = torch.rand(2, 3, 32, 32)
        >>> bool((net(x) - x).abs().max() < 1e-2)
        True
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        mode: DenoiseMode = "filtering",
        kernel_size: int = 3,
        heads: int = 1,
        width: int = 32,
        max_width: int = 512,
        default_head: int | None = None,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise InvalidParameterError(
                f"unknown denoising mode {mode!r}; valid: {', '.join(_MODES)}"
            )
        self.mode: DenoiseMode = mode
        self.kernel_size = _check_kernel_size(kernel_size)
        self.num_heads = _check_int("heads", heads)
        self.clamp = clamp
        self.unet = UNet(in_channels, image_size, width, max_width)
        self.in_channels = in_channels
        self.heads = nn.ModuleList(
            _output_layer(self.unet.out_channels, in_channels, mode, kernel_size)
            for _ in range(heads)
        )
        self.default_head = None if default_head is None else self._head_index(default_head)

    def _head_index(self, head: int | None) -> int:
        if head is None:
            if self.num_heads == 1:
                return 0
            if self.default_head is None:
                raise InvalidParameterError(
                    f"this denoiser has {self.num_heads} heads and no default_head; the paper "
                    "(Sec. 3.4, Table 3) evaluates each head separately and gives no rule to "
                    "pick one: pass head=i, build with default_head=i, or use forward_all_heads"
                )
            return self.default_head
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < self.num_heads:
            raise InvalidParameterError(
                f"head must be an index in 0..{self.num_heads - 1}, got {head!r}"
            )
        return head

    def forward_with_prediction(
        self, x: torch.Tensor, head: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoised images and φ(x), from one forward pass.

        φ(x) is the raw output of the head: the kernels ``(N, C*K*K, H, W)`` in filtering mode
        (for :func:`uncertainty_map` and the paper's Fig. 4), the predicted inverse
        perturbation ``(N, C, H, W)`` in additive mode.

        Args:
            x: images ``(N, C, H, W)`` in ``[0, 1]``.
            head: the head's index, or None (see the class docstring).

        Returns:
            ``(denoised, prediction)``.

        Example:
            >>> import torch
            >>> net = Denoiser(in_channels=1, image_size=28, kernel_size=5, width=4)
            >>> denoised, kernels = net.forward_with_prediction(torch.rand(2, 1, 28, 28))
            >>> tuple(kernels.shape)
            (2, 25, 28, 28)
        """
        index = self._head_index(head)
        prediction: torch.Tensor = self.heads[index](self.unet(x))
        return _denoise(x, prediction, self.mode, self.kernel_size, self.clamp), prediction

    def forward(self, x: torch.Tensor, head: int | None = None) -> torch.Tensor:
        """The denoised images ``(N, C, H, W)`` (head as in :meth:`forward_with_prediction`)."""
        return self.forward_with_prediction(x, head)[0]

    def forward_all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """Every head's denoised images ``(heads, N, C, H, W)``, the U-Net run once (Table 3).

        Example:
            >>> import torch
            >>> net = Denoiser(in_channels=1, image_size=28, heads=4, width=4)
            >>> net.forward_all_heads(torch.rand(2, 1, 28, 28)).shape
            torch.Size([4, 2, 1, 28, 28])
        """
        features = self.unet(x)
        return torch.stack(
            [
                _denoise(x, head(features), self.mode, self.kernel_size, self.clamp)
                for head in self.heads
            ]
        )


class _KernelDecoder(nn.Module):
    """One decoder of the Y-Net with its filtering output layer: blocks 6-8 and the head."""

    def __init__(
        self, levels: list[int], widths: list[int], channels: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.blocks = _Decoder(levels, widths)
        self.head = _output_layer(self.blocks.out_channels, channels, "filtering", kernel_size)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.head(self.blocks(features))
        return out


class YNetOutput(NamedTuple):
    """The two outputs of a :class:`YNet` and the kernels that made them (Eqs. 8-9).

    Example:
        >>> YNetOutput._fields
        ('denoised_sl', 'denoised_m', 'kernels_sl', 'kernels_m')
    """

    denoised_sl: torch.Tensor
    denoised_m: torch.Tensor
    kernels_sl: torch.Tensor
    kernels_m: torch.Tensor


class YNet(nn.Module):
    """The dual-perturbation filter of Sec. 4.1: one encoder, two filtering decoders.

    ``encoder`` is the :class:`UNet`'s encoder; ``decoder_sl`` (φ_sl, small and large
    strengths) and ``decoder_m`` (φ_m, median strengths) are each the U-Net's decoder plus a
    filtering output layer (``.blocks`` and ``.head``). Sec. 4.2 trains the decoders on
    different strengths (``EPSILONS_ALL`` and ``EPSILONS_MEDIAN_DECODER``): a loss on one
    output reaches only the encoder and that decoder.

    Args:
        in_channels: image channels C.
        image_size: square input side (see :class:`UNet`).
        width: the base width.
        kernel_size: the filter side K (odd).
        max_width: the width cap.
        clamp: clamp outputs to ``[0, 1]``.

    Raises:
        InvalidParameterError: for bad sizes.

    Example:
        >>> import torch
        >>> net = YNet(in_channels=1, image_size=28, width=4)
        >>> out = net(torch.rand(2, 1, 28, 28))
        >>> tuple(out.denoised_sl.shape), tuple(out.kernels_m.shape)
        ((2, 1, 28, 28), (2, 9, 28, 28))
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        width: int = 32,
        kernel_size: int = 3,
        max_width: int = 512,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        unet_downsamplings(image_size)
        self.image_size = image_size
        _check_int("width", width)
        _check_int("max_width", max_width)
        self.kernel_size = _check_kernel_size(kernel_size)
        self.clamp = clamp
        levels, widths = _plan(image_size, width, max_width)
        self.encoder = _Encoder(in_channels, levels, widths)
        self.decoder_sl = _KernelDecoder(levels, widths, in_channels, kernel_size)
        self.decoder_m = _KernelDecoder(levels, widths, in_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> YNetOutput:
        """Both denoised images ``(N, C, H, W)`` and both kernel tensors ``(N, C*K*K, H, W)``."""
        _check_images(x, self.in_channels, self.image_size, "this Y-Net")
        features = self.encoder(x)
        kernels_sl = self.decoder_sl(features)
        kernels_m = self.decoder_m(features)
        return YNetOutput(
            _denoise(x, kernels_sl, "filtering", self.kernel_size, self.clamp),
            _denoise(x, kernels_m, "filtering", self.kernel_size, self.clamp),
            kernels_sl,
            kernels_m,
        )


class FusionNet(nn.Module):
    """C(·) of Eq. 11: six 3x3 convolutions and a sigmoid, uncertainty maps to a weight map.

    Input ``[U_sl, U_m]``, ``(N, 2, H, W)``; output the weight map ``W`` ``(N, 1, H, W)`` in
    ``(0, 1)``. ReLU between the convolutions, ``hidden`` channels (the paper gives none).

    Args:
        hidden: channels of the five hidden convolutions.

    Raises:
        InvalidParameterError: for a non-positive ``hidden``.

    Example:
        >>> import torch
        >>> w = FusionNet(hidden=4)(torch.rand(2, 2, 8, 8))
        >>> tuple(w.shape), bool(((w > 0) & (w < 1)).all())
        ((2, 1, 8, 8), True)
    """

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        _check_int("hidden", hidden)
        layers: list[nn.Module] = []
        cin = 2
        for _ in range(5):
            layers += [nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(inplace=True)]
            cin = hidden
        layers += [nn.Conv2d(cin, 1, 3, padding=1), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, uncertainty: torch.Tensor) -> torch.Tensor:
        """The weight map ``(N, 1, H, W)`` for the two concatenated maps ``(N, 2, H, W)``."""
        if uncertainty.dim() != 4 or uncertainty.shape[1] != 2:
            raise InvalidParameterError(
                "the fusion network takes the two uncertainty maps concatenated, (N, 2, H, W); "
                f"got {tuple(uncertainty.shape)}"
            )
        out: torch.Tensor = self.layers(uncertainty)
        return out


class AdvFilterParts(NamedTuple):
    """Everything :class:`AdvFilter` computes for one batch, for reports.

    ``denoised`` is Eq. 12's fused output, ``weight`` the map W of Eq. 11 (``(N, 1, H, W)``),
    ``uncertainty_*`` the maps of Eq. 10 (``(N, 1, H, W)``), the rest as in
    :class:`YNetOutput`.

    Example:
        >>> AdvFilterParts._fields[:3]
        ('denoised', 'denoised_sl', 'denoised_m')
    """

    denoised: torch.Tensor
    denoised_sl: torch.Tensor
    denoised_m: torch.Tensor
    uncertainty_sl: torch.Tensor
    uncertainty_m: torch.Tensor
    weight: torch.Tensor
    kernels_sl: torch.Tensor
    kernels_m: torch.Tensor


@MODELS.register("huang2021_advfilter", tags=("huang2021", "denoiser"))
class AdvFilter(nn.Module):
    """Predictive perturbation-aware filtering (Sec. 4): a :class:`YNet` fused by a weight map.

    ``W = C([U_sl, U_m])`` (Eq. 11) and ``Ĩ = W ⊙ Ĩ_sl + (1 - W) ⊙ Ĩ_m`` (Eq. 12), W shared by
    all channels. With W in ``(0, 1)`` every fused pixel lies between the two decoders'
    outputs, so it stays in ``[0, 1]`` when they do. Sec. 4.2 trains ``ynet`` first, then
    freezes it and trains ``fusion``; gradients flow through the uncertainty maps, so freezing
    is the trainer's ``ynet.requires_grad_(False)``.

    Args:
        in_channels: image channels C.
        image_size: square input side (see :class:`UNet`).
        width: the Y-Net's base width.
        kernel_size: the filter side K (odd).
        fusion_hidden: the fusion network's hidden channels.
        max_width: the Y-Net's width cap.
        clamp: clamp the Y-Net's outputs to ``[0, 1]``.

    Raises:
        InvalidParameterError: for bad sizes.

    Example:
        >>> import torch
        >>> model = AdvFilter(in_channels=3, image_size=32, width=4, fusion_hidden=4)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        width: int = 32,
        kernel_size: int = 3,
        fusion_hidden: int = 16,
        max_width: int = 512,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        self.ynet = YNet(in_channels, image_size, width, kernel_size, max_width, clamp)
        self.fusion = FusionNet(fusion_hidden)

    def forward_parts(self, x: torch.Tensor) -> AdvFilterParts:
        """The fused output and every intermediate piece (Eqs. 8-12) for images ``x``.

        Example:
            >>> import torch
            >>> parts = AdvFilter(1, 28, width=4, fusion_hidden=4).forward_parts(
            ...     torch.rand(2, 1, 28, 28)
            ... )
            >>> tuple(parts.weight.shape), tuple(parts.uncertainty_sl.shape)
            ((2, 1, 28, 28), (2, 1, 28, 28))
        """
        y = self.ynet(x)
        k, c = self.ynet.kernel_size, self.ynet.in_channels
        u_sl = uncertainty_map(y.kernels_sl, c, k)
        u_m = uncertainty_map(y.kernels_m, c, k)
        weight = self.fusion(torch.cat([u_sl, u_m], dim=1))
        fused = weight * y.denoised_sl + (1 - weight) * y.denoised_m
        return AdvFilterParts(
            fused, y.denoised_sl, y.denoised_m, u_sl, u_m, weight, y.kernels_sl, y.kernels_m
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fused denoised images ``(N, C, H, W)`` (Eq. 12)."""
        return self.forward_parts(x).denoised


def image_loss(clean: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Eq. 4, ``L_img = ||I - Ĩ||_1``, as the mean absolute difference over all pixels.

    Args:
        clean: the clean images I.
        denoised: the denoised images Ĩ, of the same shape.

    Returns:
        A scalar tensor.

    Raises:
        InvalidParameterError: for shapes that differ.

    Example:
        >>> import torch
        >>> float(image_loss(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)))
        0.5
    """
    if clean.shape != denoised.shape:
        raise InvalidParameterError(
            f"clean and denoised images differ in shape: {tuple(clean.shape)} and "
            f"{tuple(denoised.shape)}"
        )
    return (clean - denoised).abs().mean()


def semantic_loss(
    classifier: nn.Module, layer: str, clean: torch.Tensor, denoised: torch.Tensor
) -> torch.Tensor:
    """Eq. 5, ``L_sem = ||φ_l(I) - φ_l(Ĩ)||_1``: the mean absolute difference of a layer's outputs.

    ``layer`` names a module of ``classifier`` as in ``classifier.named_modules()`` (``""`` is
    the classifier itself: its logits). Its outputs are captured with a forward hook that is
    removed before returning, also on error. The module must run exactly once per forward pass
    and return a tensor.

    The classifier is frozen here, whatever its ``requires_grad``: the clean pass runs without
    gradients and the denoised pass with detached parameters, so the gradient reaches
    ``denoised`` (and the denoiser behind it) and never the classifier's parameters. Its mode
    is left alone: put it in eval mode (batch norm and dropout) before training against it.

    Args:
        classifier: the frozen classifier φ.
        layer: the module whose output is compared.
        clean: the clean images I.
        denoised: the denoised images Ĩ, of the same shape.

    Returns:
        A scalar tensor.

    Raises:
        InvalidParameterError: for an unknown layer (the valid names listed), shapes that
            differ, or a layer that does not run exactly once or returns no tensor.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> float(semantic_loss(net, "1", x, x))
        0.0
    """
    modules = dict(classifier.named_modules())
    if layer not in modules:
        valid = [name for name in modules if name]
        message = (
            f"unknown layer {layer!r} of {type(classifier).__name__}; valid: "
            f"{', '.join(valid) or '(none)'} (or '' for the classifier's output)"
        )
        close = difflib.get_close_matches(layer, valid, n=1)
        if close:
            message += f" (did you mean '{close[0]}'?)"
        raise InvalidParameterError(message)
    if clean.shape != denoised.shape:
        raise InvalidParameterError(
            f"clean and denoised images differ in shape: {tuple(clean.shape)} and "
            f"{tuple(denoised.shape)}"
        )
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise InvalidParameterError(
                f"layer {layer!r} returns {type(output).__name__}, not a tensor; pick a layer "
                "whose output is one tensor"
            )
        captured.append(output)

    def single() -> torch.Tensor:
        if len(captured) != 1:
            raise InvalidParameterError(
                f"layer {layer!r} ran {len(captured)} times in one forward pass; pick a layer "
                "that runs exactly once (not a module reused in several places)"
            )
        return captured.pop()

    frozen = {name: p.detach() for name, p in classifier.named_parameters()}
    handle = modules[layer].register_forward_hook(capture)
    try:
        with torch.no_grad():
            classifier(clean)
        target = single()
        torch.func.functional_call(classifier, frozen, (denoised,))
        output = single()
    finally:
        handle.remove()
    return (target - output).abs().mean()
