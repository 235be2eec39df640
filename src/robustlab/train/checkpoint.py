"""Model + optimizer checkpoints in safetensors (no pickle), for continuing a training run.

Example:
    >>> import tempfile, torch
    >>> net = torch.nn.Linear(2, 2)
    >>> opt = torch.optim.Adam(net.parameters())
    >>> net(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> path = tempfile.mkdtemp() + "/ck.safetensors"
    >>> save_checkpoint(path, net, opt, epoch=3)
    >>> net2 = torch.nn.Linear(2, 2); opt2 = torch.optim.Adam(net2.parameters())
    >>> load_checkpoint(path, net2, opt2)
    3
    >>> bool(torch.equal(net.weight, net2.weight))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from robustlab.errors import ModelError


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    extra: dict[str, float] | None = None,
) -> None:
    """Atomically write model weights, optimizer state and the epoch count to ``path``.

    ``extra`` holds running totals (images seen, seconds) that a continued training adds to.
    """
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model.{key}"] = value.detach().contiguous().cpu()
    state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    metadata = {
        "epoch": str(epoch),
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        "extra": json.dumps(extra or {}),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, target)


def checkpoint_epoch(path: str | os.PathLike[str]) -> int:
    """The number of epochs completed in the checkpoint at ``path``."""
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {})["epoch"])


def checkpoint_extra(path: str | os.PathLike[str]) -> dict[str, float]:
    """The running totals saved with the checkpoint at ``path`` (empty for older ones)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(json.loads((f.metadata() or {}).get("extra", "{}")))
    except (OSError, ValueError):
        return {}


def load_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer
) -> int:
    """Restore ``model`` and ``optimizer`` from ``path``; returns the epochs completed."""
    device = next(model.parameters()).device
    model_state: dict[str, torch.Tensor] = {}
    optim_state: dict[int, dict[str, Any]] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                group, _, rest = key.partition(".")
                if group == "model":
                    model_state[rest] = f.get_tensor(key)
                else:
                    index, _, name = rest.partition(".")
                    optim_state.setdefault(int(index), {})[name] = f.get_tensor(key).to(device)
        for index, values in json.loads(metadata["scalars"]).items():
            optim_state.setdefault(int(index), {}).update(values)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(
            {"state": optim_state, "param_groups": json.loads(metadata["param_groups"])}
        )
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise ModelError(
            f"checkpoint {path} cannot be restored: {err}; delete it to retrain"
        ) from err
    return int(metadata["epoch"])
