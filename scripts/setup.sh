#!/usr/bin/env bash
# Create .venv and install robustlab into it, offline-friendly (only PyPI is needed).
# torch==2.13.0 goes first: it is the CPU wheel here, and any other torch spec (or letting a
# dependency pull torch) downloads gigabytes of CUDA builds. Never install torchvision.
# Usage: bash scripts/setup.sh          # the package
#        bash scripts/setup.sh --dev    # the package + test and lint tools + Ray (its tests)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
if [ "${1:-}" = "--dev" ]; then
  python -m pip install --quiet -e ".[dev,ray]"
else
  python -m pip install --quiet -e .
fi
echo "robustlab installed in $(pwd)/.venv"
