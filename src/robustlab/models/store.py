"""Saving and loading trained models: weights as safetensors plus a JSON model card.

A saved model is two files side by side, ``NAME.safetensors`` (weights, no pickle) and
``NAME.json`` (the card: architecture and its parameters, training data, seed, epochs, clean
accuracy). :func:`load_model` rebuilds the architecture from the card and loads the weights.

Example:
    >>> import tempfile, torch
    >>> from robustlab.models import create_model
    >>> net = create_model("lin2022_cnn")
    >>> card = ModelCard(architecture="lin2022_cnn", params={}, dataset="mnist-sample")
    >>> path = save_model(net, card, tempfile.mkdtemp() + "/cnn")
    >>> again = load_model(path)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> bool(torch.equal(net.eval()(x), again(x)))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robustlab.atomic import atomic_path, write_text_atomic
from robustlab.device import resolve_device
from robustlab.errors import ModelError
from robustlab.models.base import create_model


class ModelCard(BaseModel):
    """What determines a trained model and what it scored."""

    model_config = ConfigDict(extra="allow")

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: str = ""
    dataset_fingerprint: str = ""
    train_size: int = 0
    seed: int = 0
    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    optimizer: str = ""
    clean_accuracy: float | None = None
    test_size: int = 0
    train_seconds: float = 0.0
    cache_key: str = ""
    robustlab_version: str = ""
    strategy: str = "standard"
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    parents: dict[str, Any] = Field(
        default_factory=dict, description="role -> {id, cache_key, epochs} of each parent"
    )
    betas: list[float] | None = None
    train_accuracy: float | None = None
    images_seen: int | None = None


def model_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The weights and card files of a saved model named by either file or their stem."""
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def save_model(model: nn.Module, card: ModelCard, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights and ``card`` next to each other; returns the weights path.

    Both files are written atomically (temporary file, then rename), so an interrupted save
    never leaves a half-written model behind.
    """
    weights, card_path = model_files(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    write_text_atomic(card_path, card.model_dump_json(indent=2))
    return weights


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read the JSON card of a saved model (``path`` may name either file of the pair)."""
    _, card_path = model_files(path)
    if not card_path.exists():
        raise ModelError(
            f"no model card at {card_path}; a robustlab model is a .safetensors file with a "
            ".json card of the same name beside it"
        )
    try:
        return ModelCard.model_validate(json.loads(card_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as err:
        raise ModelError(
            f"model card {card_path} is not valid: {err}; replace it with the card saved with "
            "the model (or delete both files and train or save the model again)"
        ) from err


def _check_model_path(path: object) -> None:
    """Refuse what cannot name a saved model: not a path, or a folder."""
    if not isinstance(path, str | os.PathLike):
        raise ModelError(
            f"load_model needs the path of a saved model (NAME.safetensors with its card "
            f"NAME.json beside it), got {path!r} ({type(path).__name__}); e.g. "
            "load_model('runs/quickstart/models/cnn.safetensors')"
        )
    folder = Path(path)
    if folder.is_dir():
        found = sorted(f.name for f in folder.glob("*.safetensors"))
        hint = (
            f" (it holds {', '.join(found[:5])})" if found else " (it holds no .safetensors file)"
        )
        raise ModelError(
            f"{folder} is a folder, not a saved model{hint}; pass the model's .safetensors "
            "file, whose .json card must lie beside it"
        )


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> nn.Module:
    """Load a saved model in eval mode: pixel-space input in ``[0, 1]``, logits out.

    Args:
        path: the ``.safetensors`` file, its ``.json`` card, or their common stem.
        device: where to put the model.

    Raises:
        ModelError: if ``path`` is not a path, names a folder, either file is missing or the
            weights do not fit the architecture.
    """
    _check_model_path(path)
    resolve_device(device)  # an unknown or absent device is refused before any file is read
    weights, card_path = model_files(path)
    if not weights.exists() and not card_path.exists():
        raise ModelError(
            f"no saved model at {weights}: no weights there and no model card at {card_path}; "
            "check the path (a study saves its models as RUN/models/NAME.safetensors + "
            "NAME.json)"
        )
    card = read_card(path)
    if not weights.exists():
        raise ModelError(
            f"no weights at {weights} (the card {weights.with_suffix('.json')} exists)"
        )
    model = create_model(card.architecture, **card.params)
    if card.strategy != "standard":
        # A strategy that starts from a parent may change the network (a new head); rebuild
        # that structure, then load the trained weights over it.
        from robustlab.train.strategy import create_strategy

        model = create_strategy(card.strategy, **card.strategy_params).adapt(model)
    state = read_weights(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"weights in {weights} do not fit {card.architecture}: {err}") from err
    return model.to(resolve_device(device)).eval()


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, on the CPU.

    Raises:
        ModelError: naming the file if it cannot be read or is not a safetensors file (a
            damaged or truncated download, another format under a ``.safetensors`` name).
    """
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or "
            "damaged, or another format under a .safetensors name. Fix: replace it with the "
            "model's original file, or delete it (with its .json card) and train or save the "
            "model again"
        ) from err
