"""Explicit, derived random generators.

Every random draw in robustlab comes from a ``torch.Generator`` whose seed is derived from the
study seed and the identity of the thing being drawn (a degradation, a trial, an epoch). A cell
therefore gives the same numbers whether it runs first or last, alone or in a resumed run.

Example:
    >>> derive_seed(0, "salt_pepper", 1) == derive_seed(0, "salt_pepper", 1)
    True
    >>> derive_seed(0, "salt_pepper", 1) == derive_seed(0, "salt_pepper", 2)
    False
    >>> g = make_generator(123)
    >>> float(torch.rand(1, generator=g)) == float(torch.rand(1, generator=make_generator(123)))
    True
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (JSON-serialisable values)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
