"""Named severity suites: the published corruption levels and each paper's own grid, as data.

A suite is a list of :class:`SuiteEntry`: one degradation, the parameter it sweeps, the values,
and any fixed parameters. :meth:`SuiteEntry.config` turns an entry into the ``degradations``
item of a study file.

Example:
    >>> [(e.label, e.values) for e in expand_suite("cifar-c") if e.label == "jpeg"]
    [('jpeg', (80, 65, 58, 50, 40))]
    >>> expand_suite("lin2022")[0].config()["grid"]
    {'sigma': [0.1, 0.2, 0.3]}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from robustlab.errors import UnknownNameError


@dataclass(frozen=True)
class SuiteEntry:
    """One degradation of a suite and the values its severity parameter takes.

    Attributes:
        label: the name the entry is reported under (unique within its suite).
        degradation: the registered degradation.
        parameter: the parameter the suite sweeps (for ``compose``, ``"<step>.<param>"``).
        values: the severity levels, mildest first.
        params: parameters held fixed at every level.
    """

    label: str
    degradation: str
    parameter: str
    values: tuple[float, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The entry as a study's ``degradations`` item: ``{name, label, params, grid}``."""
        return {
            "name": self.degradation,
            "label": self.label,
            "params": copy.deepcopy(self.params),
            "grid": {self.parameter: list(self.values)},
        }


def _linspace(start: float, stop: float, num: int) -> tuple[float, ...]:
    """``num`` evenly spaced values, rounded to 10 decimals so they print as written."""
    step = (stop - start) / (num - 1)
    return tuple(round(start + i * step, 10) for i in range(num))


# Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions
# and Perturbations", severities 1-5. Constants from github.com/hendrycks/robustness,
# ImageNet-C/create_c/make_cifar_c.py (commit ca360085) and make_imagenet_c.py (commit
# e0377d46); the ImageNet-C ones are the same in bethgelab/imagecorruptions,
# imagecorruptions/corruptions.py (commit 952dc3e0). How their definitions differ from ours:
# - gaussian_noise: the same (clip(x + N(0, c^2)) on [0, 1]); they then store uint8
#   (CIFAR-10-C truncates with np.uint8, ImageNet-C re-saves every image as JPEG quality 85).
# - impulse noise: skimage random_noise(mode="s&p", amount=c) hits each channel *value*
#   independently; our salt_pepper hits a pixel on all channels at once. Same for grey images.
# - gaussian_blur: skimage.filters.gaussian(sigma=c), truncate 4 like ours but border mode
#   "nearest" (ours mirrors), sigma in pixels of the 32x32 (CIFAR) or 224x224 (ImageNet) image.
# - jpeg: PIL Image.save(quality=c) with Pillow's defaults, as ours; imagecorruptions converts a
#   grey image to RGB before coding.
_CIFAR_C = [
    SuiteEntry("gaussian_noise", "gaussian_noise", "sigma", (0.04, 0.06, 0.08, 0.09, 0.10)),
    SuiteEntry("impulse_noise", "salt_pepper", "amount", (0.01, 0.02, 0.03, 0.05, 0.07)),
    SuiteEntry("gaussian_blur", "gaussian_blur", "sigma", (0.4, 0.6, 0.7, 0.8, 1.0)),
    SuiteEntry("jpeg", "jpeg", "quality", (80, 65, 58, 50, 40)),
]
_IMAGENET_C = [
    SuiteEntry("gaussian_noise", "gaussian_noise", "sigma", (0.08, 0.12, 0.18, 0.26, 0.38)),
    SuiteEntry("impulse_noise", "salt_pepper", "amount", (0.03, 0.06, 0.09, 0.17, 0.27)),
    SuiteEntry("gaussian_blur", "gaussian_blur", "sigma", (1.0, 2.0, 3.0, 4.0, 6.0)),
    SuiteEntry("jpeg", "jpeg", "quality", (25, 18, 15, 10, 7)),
]

# ghosh2018 gives no grid values (its curves are plotted only). JPEG: the whole quality range,
# dense where accuracy moves (the paper: flat at high quality, dropping below about 20; VGG-16
# vs AlexNet flips at quality <= 5; Table 1 uses 10; branch 2 trains on 20 to 5), 10 apart above
# 20. JPEG 2000: the paper's "quality factors" have no stated scale, so compression ratios from
# 2:1 to 200:1, log-spaced. Blur for the combinations is the paper's "radius 4, standard
# deviation 1"; the noise level of noise + compression is not stated: sigma 10/255 is our choice.
_GHOSH_JPEG = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 100)
_GHOSH_RATIOS = (2, 5, 10, 20, 50, 100, 200)
_GHOSH_BLUR = "gaussian_blur:sigma=1.0,radius=4"
_GHOSH_NOISE = "gaussian_noise_255:sigma=10"

SUITES: dict[str, list[SuiteEntry]] = {
    "cifar-c": _CIFAR_C,
    "imagenet-c": _IMAGENET_C,
    # lin2022 Section 3.1: noise amplitude and salt-and-pepper fraction.
    "lin2022": [
        SuiteEntry("gaussian_noise", "gaussian_noise", "sigma", (0.1, 0.2, 0.3)),
        SuiteEntry("salt_pepper", "salt_pepper", "amount", (0.1, 0.2, 0.3)),
    ],
    # aghdam2016 (L99): sigma on the 0-255 scale (inferred from its PSNR statements).
    "aghdam2016": [
        SuiteEntry(
            "gaussian_noise",
            "gaussian_noise_255",
            "sigma",
            (1, 2, 4, 8, 10, 14, 18, 20, 25, 30, 35, 40),
        ),
    ],
    # cavey Section V: 1-5 modified pixels; noise "variance" 0.001-0.050 in five even steps
    # (read as the variance, as the paper calls it; Sec. VI prints 0.02550, 0.03775, 0.05000);
    # blur sigma "between 0.40 and 1.00 ... five different values, linearly spaced" (Sec. V.C).
    # Fig. 7's caption and Sec. VI say 0.04 to 1.00 instead: kept as gaussian_blur_alt (with
    # our default radius int(4 sigma + 0.5), sigma 0.04 is radius 0, the identity).
    "cavey": [
        SuiteEntry("dead_pixels", "dead_pixels", "count", (1, 2, 3, 4, 5)),
        SuiteEntry("hot_pixels", "hot_pixels", "count", (1, 2, 3, 4, 5)),
        SuiteEntry("stuck_pixels", "stuck_pixels", "count", (1, 2, 3, 4, 5)),
        SuiteEntry(
            "gaussian_noise", "gaussian_noise_variance", "variance", _linspace(0.001, 0.05, 5)
        ),
        SuiteEntry("gaussian_blur", "gaussian_blur", "sigma", _linspace(0.4, 1.0, 5)),
        SuiteEntry("gaussian_blur_alt", "gaussian_blur", "sigma", _linspace(0.04, 1.0, 5)),
    ],
    "ghosh2018": [
        SuiteEntry("jpeg", "jpeg", "quality", _GHOSH_JPEG),
        SuiteEntry("jpeg2000", "jpeg2000", "ratio", _GHOSH_RATIOS),
        SuiteEntry(
            "blur+jpeg", "compose", "jpeg.quality", _GHOSH_JPEG, {"steps": [_GHOSH_BLUR, "jpeg"]}
        ),
        SuiteEntry(
            "blur+jpeg2000",
            "compose",
            "jpeg2000.ratio",
            _GHOSH_RATIOS,
            {"steps": [_GHOSH_BLUR, "jpeg2000:ratio=2"]},
        ),
        SuiteEntry(
            "noise+jpeg", "compose", "jpeg.quality", _GHOSH_JPEG, {"steps": [_GHOSH_NOISE, "jpeg"]}
        ),
        SuiteEntry(
            "noise+jpeg2000",
            "compose",
            "jpeg2000.ratio",
            _GHOSH_RATIOS,
            {"steps": [_GHOSH_NOISE, "jpeg2000:ratio=2"]},
        ),
    ],
}


def expand_suite(name: str) -> list[SuiteEntry]:
    """The entries of the suite ``name`` (copies: changing them leaves :data:`SUITES` alone).

    Raises:
        UnknownNameError: if there is no such suite; the message lists the valid names.
    """
    if name not in SUITES:
        raise UnknownNameError("suite", name, SUITES)
    return copy.deepcopy(SUITES[name])
