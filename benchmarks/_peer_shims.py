"""Import-time shims that let ``imagecorruptions`` 1.1.2 run on current NumPy and scikit-image.

``imagecorruptions`` (the CIFAR-10-C / ImageNet-C corruption code, last released in 2020) is
installed in ``.bench-venv`` with ``--no-deps`` (its declared dependencies pull torchvision and
the GUI build of OpenCV) and breaks on today's libraries in three places. Nothing in
site-packages is edited: importing this module patches, in memory, the libraries it uses.

* ``pkg_resources``: ``imagecorruptions.corruptions`` imports ``resource_filename`` from it (for
  the frost images). setuptools 81 removed ``pkg_resources``; ``benchmarks/setup_peers.sh``
  installs ``setuptools<81``, and when it is missing anyway a minimal stand-in module with
  ``resource_filename`` (built on ``importlib.resources``) is registered instead.
* ``numpy.float_``: removed in NumPy 2.0; ``plasma_fractal`` (fog) uses it. Restored as an alias
  of ``numpy.float64``, the type it always was.
* ``skimage.filters.gaussian(..., multichannel=True)``: the ``multichannel`` argument was removed
  in scikit-image 0.21 in favour of ``channel_axis``. The wrapper installed here translates
  ``multichannel=True`` into ``channel_axis=-1`` for ``(H, W, C)`` images and into
  ``channel_axis=None`` for 2-D (grey) images, where a channel axis would be the image width.
  ``imagecorruptions`` binds ``gaussian`` with ``from skimage.filters import gaussian``, so the
  wrapper must be installed before ``imagecorruptions`` is first imported:
  :func:`import_imagecorruptions` does both in the right order.

The import also emits deprecation warnings (``pkg_resources`` itself,
``scipy.ndimage.interpolation``); they are silenced for that import only.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
import warnings
from typing import Any

import numpy as np


def _patch_numpy() -> None:
    if not hasattr(np, "float_"):
        setattr(np, "float_", np.float64)  # noqa: B010  (the removed alias; ruff's NPY201)


def _patch_pkg_resources() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pkg_resources  # noqa: F401

            return
        except ImportError:
            pass
    from importlib.resources import files

    stand_in = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(files(package).joinpath(resource))

    stand_in.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in


def _patch_skimage_gaussian() -> None:
    import skimage.filters

    original = skimage.filters.gaussian
    if getattr(original, "_peer_shim", False):
        return

    @functools.wraps(original)
    def gaussian(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel and np.ndim(image) == 3 else None
        return original(image, *args, **kwargs)

    gaussian._peer_shim = True  # type: ignore[attr-defined]
    skimage.filters.gaussian = gaussian


def apply() -> None:
    """Install every shim (idempotent)."""
    _patch_numpy()
    _patch_pkg_resources()
    _patch_skimage_gaussian()


def import_imagecorruptions() -> types.ModuleType:
    """Apply the shims, then import and return ``imagecorruptions``."""
    apply()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return importlib.import_module("imagecorruptions")


apply()
