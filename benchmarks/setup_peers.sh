#!/usr/bin/env bash
# Create .bench-venv (a separate environment, never the project's .venv) with robustlab and the
# peer libraries that benchmarks/bench_degradations.py compares it with. Only PyPI is needed.
#
# Order matters: torch==2.13.0 goes first (it is the CPU wheel here; any other torch spec, or a
# peer pulling torch in, downloads gigabytes of CUDA builds), then robustlab, then the peers.
# Never install torchvision. imagecorruptions goes in with --no-deps: its declared dependencies
# would pull torchvision and the GUI build opencv-python. What it really uses (NumPy, SciPy,
# scikit-image, OpenCV, Pillow) comes with the other packages here; setuptools<81 still ships
# pkg_resources, which it imports; and benchmarks/_peer_shims.py patches, at import time, what
# it needs from current NumPy and scikit-image (np.float_, gaussian(multichannel=...)).
#
# Usage: bash benchmarks/setup_peers.sh      (about 1-2 minutes; rerunning it is harmless)
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep the environment out of git (a one-line append to .gitignore when missing).
if ! grep -qxF '.bench-venv/' .gitignore 2>/dev/null; then
  if [ -s .gitignore ] && [ -n "$(tail -c1 .gitignore)" ]; then echo >> .gitignore; fi
  echo '.bench-venv/' >> .gitignore
fi

python3 -m venv .bench-venv
PY=.bench-venv/bin/python
$PY -m pip install --quiet --upgrade pip
$PY -m pip install --quiet torch==2.13.0
$PY -m pip install --quiet -e .
$PY -m pip install --quiet opencv-python-headless scipy scikit-image kornia "setuptools<81"
$PY -m pip install --quiet --no-deps imagecorruptions
# torchattacks 3.5.1 (for benchmarks/bench_pgd.py) declares torchvision, requests and tqdm as
# dependencies; --no-deps keeps them (and any other torch) out. Its PGD imports and runs without
# them; the smoke test below checks that, and that torchvision was not imported.
$PY -m pip install --quiet --no-deps torchattacks
# Ray core (robustlab's `ray` extra, no Tune, no dashboard), for benchmarks/bench_ray.py: the Ray
# executor against the local one. It does not pull torch.
$PY -m pip install --quiet "ray>=2.60"

# The reference AutoAttack (Croce & Hein, github.com/fra31/auto-attack) is not on PyPI: give a
# checkout of it in AUTOATTACK_SRC to install it too (plain PyTorch; --no-deps keeps torch as is).
# benchmarks/bench_autoattack.py compares robustlab's autoattack with it and with torchattacks'.
if [ -n "${AUTOATTACK_SRC:-}" ]; then
  $PY -m pip install --quiet --no-deps "$AUTOATTACK_SRC"
fi

# Smoke test: every peer imports and the four corruptions the benchmark uses run.
$PY - <<'PY'
import sys

sys.path.insert(0, "benchmarks")
import _peer_shims

ic = _peer_shims.import_imagecorruptions()
import cv2
import kornia
import numpy as np
import PIL
import ray
import scipy
import skimage
import torch
import torchattacks
from PIL import Image

import robustlab

image = np.zeros((32, 32, 3), np.uint8)
for name in ("gaussian_noise", "impulse_noise", "gaussian_blur", "jpeg_compression"):
    assert np.uint8(getattr(ic, name)(Image.fromarray(image), 1)).shape == image.shape, name
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
adv = torchattacks.PGD(net, eps=0.1, alpha=0.05, steps=2)(torch.rand(3, 1, 2, 2), torch.zeros(3).long())
assert adv.shape == (3, 1, 2, 2), "torchattacks PGD"
assert not any(m.startswith("torchvision") for m in sys.modules), "torchvision got imported"
print(
    f"peers ready: torch {torch.__version__}, robustlab {robustlab.__version__}, "
    f"opencv {cv2.__version__}, pillow {PIL.__version__}, scipy {scipy.__version__}, "
    f"scikit-image {skimage.__version__}, kornia {kornia.__version__}, "
    f"numpy {np.__version__}, torchattacks {torchattacks.__version__}, ray {ray.__version__}, "
    "imagecorruptions ok"
)
PY
echo "benchmark environment ready in $(pwd)/.bench-venv"
echo "run: .bench-venv/bin/python benchmarks/bench_degradations.py"
echo "     .bench-venv/bin/python benchmarks/bench_pgd.py"
echo "     .bench-venv/bin/python benchmarks/bench_autoattack.py"
echo "     benchmarks/run          (the whole suite, one table of ratios)"
