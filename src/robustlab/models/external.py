r"""Bring your own model: a TorchScript file, or a ``module:factory`` reference plus weights.

Two ways to hand robustlab a trained network:

* **TorchScript**: a file written by ``torch.jit.script(model).save(path)`` or
  ``torch.jit.trace(model, example).save(path)``; architecture and weights travel together.
* **Factory + weights**: ``factory`` names a callable that builds the network, either as an
  importable ``package.module:make_net`` or as a file ``path/to/nets.py:make_net``;
  ``factory_params`` are its keyword arguments; ``weights`` is a state dict as safetensors or
  as a ``torch.save(model.state_dict())`` file (``.pt`` / ``.pth``), read with
  ``torch.load(weights_only=True)`` (robustlab never unpickles arbitrary objects). A state dict
  wrapped as ``{"state_dict": ...}`` (or ``"model_state_dict"``, ``"model"``) or with the
  ``module.`` prefix of ``nn.DataParallel`` is unwrapped.

robustlab feeds every model pixels in ``[0, 1]``. A model trained on normalised inputs gets
its normalisation declared (``mean`` / ``std``) and is wrapped so that it still takes
``[0, 1]`` pixels (:class:`Normalized`). Given the dataset's image shape and class count,
:func:`load_external_model` classifies one dummy batch at load time (:func:`probe_model`), so
a model built for other images or another number of classes fails at once, with the shapes
and the fix, instead of in the middle of a study. Relative paths are relative to the current
directory.

The same factory can also define an architecture that robustlab trains: the registered model
``external_factory`` builds it (with the normalisation wrapped in front), which is what a
study's ``{factory: ..., epochs: [...]}`` entry without ``weights`` trains.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "nets.py").write_text(
    ...     "import torch\n"
    ...     "def make_net(classes=10):\n"
    ...     "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, classes))\n")
    >>> reference = f"{folder / 'nets.py'}:make_net"
    >>> net = build_from_factory(reference, {"classes": 10})
    >>> torch.save(net.state_dict(), folder / "net.pt")
    >>> model = load_external_model(factory=reference, weights=folder / "net.pt",
    ...     mean=[0.13], std=[0.31], image_shape=(1, 28, 28), num_classes=10)
    >>> model(torch.rand(4, 1, 28, 28)).shape
    torch.Size([4, 10])
    >>> load_external_model(factory=reference, weights=folder / "net.pt",
    ...     image_shape=(1, 28, 28), num_classes=43)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robustlab.errors.ModelError: ... returned logits of shape (2, 10) ... needs (2, 43), ...
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from robustlab.errors import ModelError
from robustlab.models.base import MODELS, Normalize

PathLike = str | os.PathLike[str]

_REFERENCE = re.compile(r"(?P<module>[^:]+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SHOWN = 8  # keys listed per kind in a mismatch message

_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: PathLike) -> str:
    """SHA-256 of a file's content (hex), remembered per path, size and modification time."""
    file = Path(path).resolve()
    stat = file.stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _existing_file(path: PathLike, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        where = "is a folder" if file.is_dir() else "does not exist"
        raise ModelError(
            f"{what} {file} {where} (resolved to {file.resolve()}); relative paths are "
            f"relative to the current directory, {Path.cwd()}"
        )
    return file


def parse_factory_reference(reference: str) -> tuple[str, str]:
    """Split ``module:name`` into the module (dotted name or ``.py`` file) and the name.

    Raises:
        ModelError: if ``reference`` is not of that form.
    """
    match = _REFERENCE.fullmatch(reference.strip())
    if match is None:
        raise ModelError(
            f"factory '{reference}' is not a reference to a callable; write "
            "'package.module:make_net' (an importable module) or 'path/to/nets.py:make_net' "
            "(a Python file)"
        )
    return match["module"], match["attr"]


def _import_file(file: Path) -> ModuleType:
    # One module per file content: an edited file is imported afresh, an unchanged one once.
    stem = re.sub(r"\W", "_", file.stem)
    name = f"_robustlab_user_{stem}_{file_digest(file)[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelError(f"{file} cannot be imported as a Python module; name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ModelError(f"importing {file} raised {type(err).__name__}: {err}") from err
    return module


def _import_module(name: str, reference: str, attr: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ModelError(
            f"cannot import module '{name}' of factory '{reference}' ({err}); install it or add "
            "its folder to PYTHONPATH, or name the file itself: "
            f"'path/to/{name.rsplit('.', 1)[-1]}.py:{attr}'"
        ) from err
    except Exception as err:
        raise ModelError(f"importing '{name}' raised {type(err).__name__}: {err}") from err


def resolve_factory(reference: str) -> Callable[..., Any]:
    """The callable named by ``reference`` (``package.module:name`` or ``file.py:name``).

    Raises:
        ModelError: if the reference is malformed, the module or file cannot be imported, the
            name does not exist in it or is not callable.
    """
    module_name, attr = parse_factory_reference(reference)
    if module_name.endswith(".py"):
        module = _import_file(_existing_file(module_name, "factory file"))
    else:
        module = _import_module(module_name, reference, attr)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            offered = sorted(
                n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
            )
            raise ModelError(
                f"module '{module_name}' has no attribute '{attr}' (factory '{reference}'); "
                f"its callables: {', '.join(offered) or '(none)'}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(
            f"factory '{reference}' is a {type(target).__name__}, not callable; name a function "
            "or class that returns a torch.nn.Module"
        )
    return target  # type: ignore[no-any-return]


def factory_code_digest(reference: str) -> str:
    """SHA-256 of the source file that defines the factory ('' if it has none).

    Covers the file defining the factory itself, not the modules that file imports.
    """
    factory = resolve_factory(reference)
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:  # built-in or C-implemented callables have no source file
        source = None
    return file_digest(source) if source and Path(source).is_file() else ""


def build_from_factory(reference: str, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the factory ``reference`` with ``params``; it must return an ``nn.Module``.

    Raises:
        ModelError: if the factory cannot be resolved, rejects the parameters, fails, or
            returns something other than a module.
    """
    factory = resolve_factory(reference)
    params = dict(params or {})
    try:
        model = factory(**params)
    except TypeError as err:
        try:
            signature = f"{inspect.signature(factory)}"
        except (TypeError, ValueError):
            signature = "(...)"
        raise ModelError(
            f"calling factory '{reference}' with factory_params {params} failed: {err}; its "
            f"signature is {signature}"
        ) from err
    except Exception as err:
        raise ModelError(
            f"factory '{reference}' raised {type(err).__name__}: {err} (factory_params {params})"
        ) from err
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"factory '{reference}' returned a {type(model).__name__}; robustlab needs a "
            "torch.nn.Module that maps images to logits"
        )
    return model


def _unwrap(state: Any, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        found = (
            f"a mapping with keys {sorted(map(str, state))[:_SHOWN]}"
            if isinstance(state, Mapping)
            else f"a {type(state).__name__}"
        )
        raise ModelError(
            f"{file} holds {found}, not a state dict (parameter name -> tensor); save "
            "model.state_dict()"
        )
    names = list(state)
    if names and all(n.startswith("module.") for n in names):  # saved from nn.DataParallel
        return {n.removeprefix("module."): state[n] for n in names}
    return dict(state)


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a ``torch.save`` file (no pickle code runs).

    The format is recognised from the content, not the file name.

    Raises:
        ModelError: if the file is missing, is neither format, or holds more than tensors.
    """
    file = _existing_file(path, "weights file")
    with file.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save: zip, or legacy pickle
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ModelError(
                f"{file} holds Python objects other than tensors (a whole pickled model?), "
                "which robustlab does not unpickle: torch.load(weights_only=True) refused it. "
                "Save model.state_dict() with torch.save or safetensors, or export the model "
                "as TorchScript"
            ) from err
        except (RuntimeError, OSError, EOFError, ValueError) as err:
            raise ModelError(f"{file} is not a readable torch.save file: {err}") from err
        return _unwrap(state, file)
    if head[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
        try:
            return _unwrap(load_file(str(file), device="cpu"), file)
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelError(
                f"{file} is not a readable safetensors file ({err}); it may be truncated or "
                "damaged. Fix: replace it with an intact copy, or save the weights again "
                "(safetensors.torch.save_file(model.state_dict(), path))"
            ) from err
    raise ModelError(
        f"{file} is neither a safetensors file nor a torch.save file; give the weights as "
        "safetensors (safetensors.torch.save_file(model.state_dict(), path)) or as "
        "torch.save(model.state_dict(), path)"
    )


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(err).__name__


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else shown


def load_weights(model: nn.Module, path: PathLike, name: str = "the model") -> None:
    """Load the state dict at ``path`` into ``model``; every key and shape must match.

    Raises:
        ModelError: listing the missing, unexpected and mis-shaped keys.
    """
    given = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys (in the model, not the file): {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys (in the file, not the model): {_listed(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches (file vs model): {_listed(shapes)}")
        raise ModelError(
            f"the weights in {path} do not fit {name}: "
            + "; ".join(problems)
            + ". The file must hold model.state_dict() of the same architecture, built with "
            "the same factory_params"
        )
    model.load_state_dict(given)


def load_torchscript(path: PathLike) -> nn.Module:
    """Load a TorchScript file on the CPU.

    Raises:
        ModelError: if the file is missing or is not TorchScript.
    """
    file = _existing_file(path, "TorchScript file")
    try:
        with warnings.catch_warnings():
            # PyTorch deprecates TorchScript in favour of torch.export; files still load.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            return torch.jit.load(str(file), map_location="cpu")  # type: ignore[no-untyped-call,no-any-return]
    except (RuntimeError, ValueError, OSError) as err:
        raise ModelError(
            f"{file} is not a TorchScript file ({_first_sentence(err)}); write one with "
            "torch.jit.script(model).save(path) or torch.jit.trace(model, example).save(path). "
            "For a state dict (torch.save(model.state_dict())) give factory + weights instead"
        ) from err


class Normalized(nn.Module):
    """A model behind its declared input normalisation, so it takes ``[0, 1]`` pixels.

    Args:
        model: the network as trained, on normalised inputs.
        mean: per-channel means (or one for all channels).
        std: per-channel standard deviations.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's output for the normalised ``x``."""
        return self.model(self.normalize(x))  # type: ignore[no-any-return]


def with_normalization(
    model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
) -> nn.Module:
    """``model`` behind :class:`Normalize` (both given) or unchanged (both None)."""
    if mean is None and std is None:
        return model
    if mean is None or std is None:
        raise ModelError("declare both mean and std of the input normalisation, or neither")
    return Normalized(model, mean, std)


def check_normalization_channels(mean: Sequence[float] | None, channels: int) -> None:
    """Raise unless the normalisation has one value or one per image channel."""
    if mean is not None and len(mean) not in (1, channels):
        raise ModelError(
            f"the input normalisation declares {len(mean)} values but the images have "
            f"{channels} channel(s); give one mean and std per channel, or one for all"
        )


def probe_model(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    num_classes: int | None,
    device: torch.device | str = "cpu",
    name: str = "the model",
) -> None:
    """Classify one dummy batch of the dataset's image shape; raise a clear error if it fails.

    Args:
        model: the model, already on ``device``.
        image_shape: ``(C, H, W)`` of the dataset's images.
        num_classes: the dataset's number of classes (None: any width is accepted).
        device: where the model lives.
        name: how error messages call the model.

    Raises:
        ModelError: naming the shapes involved and how to fix them.
    """
    c, h, w = image_shape
    batch = torch.full((2, c, h, w), 0.5, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch)
    except Exception as err:
        raise ModelError(
            f"{name} cannot classify this dataset's images: a dummy batch of shape "
            f"(2, {c}, {h}, {w}) failed with {type(err).__name__}: {_first_sentence(err)}. "
            f"Build the model for {c}-channel {h}x{w} images in [0, 1] (its input channels / "
            "image size), or use it with a dataset of the image size it was made for"
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"{name} returned a {type(out).__name__} for a batch of images; robustlab needs a "
            "tensor of logits (N, classes): wrap the model so that forward returns only them"
        )
    wanted = f"(2, {num_classes})" if num_classes is not None else "(2, classes)"
    if (
        out.ndim != 2
        or out.shape[0] != 2
        or (num_classes is not None and out.shape[1] != num_classes)
    ):
        raise ModelError(
            f"{name} returned logits of shape {tuple(out.shape)} for a dummy batch of shape "
            f"(2, {c}, {h}, {w}); robustlab needs {wanted}, one row per image and one column "
            "per class of the dataset. Build the model with the dataset's number of classes "
            "(replace its last layer) or use it with the dataset it was trained for"
        )


def load_external_model(
    *,
    torchscript: PathLike | None = None,
    factory: str | None = None,
    factory_params: Mapping[str, Any] | None = None,
    weights: PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Load a user's model in eval mode on ``device``, taking ``[0, 1]`` pixels.

    Give exactly one of ``torchscript`` and ``factory``. ``weights`` go with ``factory``;
    without them the factory's model is used as it comes (e.g. one that loads its own weights).

    Args:
        torchscript: a TorchScript file.
        factory: ``package.module:name`` or ``path/to/file.py:name`` of a callable returning
            an ``nn.Module``.
        factory_params: keyword arguments of the factory.
        weights: a state dict file (safetensors, or ``torch.save`` read with weights_only).
        mean: the input normalisation the model was trained with (one value per channel).
        std: its standard deviations.
        image_shape: ``(C, H, W)`` of the images it will see: probes the model with one batch.
        num_classes: the number of classes it must output (checked with ``image_shape``).
        device: where to put the model.

    Raises:
        ModelError: with the problem and its fix (missing file, import failure, weights not
            matching, not TorchScript, output or input shape not fitting the data).
    """
    if (torchscript is None) == (factory is None):
        raise ModelError("give exactly one of torchscript (a file) and factory (module:name)")
    if torchscript is not None:
        if weights is not None or factory_params:
            raise ModelError("a TorchScript file holds its weights; give no weights or params")
        net = load_torchscript(torchscript)
        name = f"TorchScript model {torchscript}"
    else:
        assert factory is not None
        net = build_from_factory(factory, factory_params)
        name = f"the model of factory '{factory}'"
        if weights is not None:
            load_weights(net, weights, name)
    if image_shape is not None:
        check_normalization_channels(mean, image_shape[0])
    model = with_normalization(net, mean, std).to(device).eval()
    if image_shape is not None:
        probe_model(model, image_shape, num_classes, device, name)
    return model


@dataclass(frozen=True)
class ExternalSource:
    """Where a pretrained study model comes from, with the content hashes that identify it.

    Build it with :meth:`locate`, which reads the files' hashes; a study's cell keys include
    them, so changed weights invalidate the results computed with the old ones.
    """

    torchscript: str | None = None
    factory: str | None = None
    factory_params: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    digest: str = ""  # SHA-256 of the TorchScript or weights file
    code_digest: str = ""  # SHA-256 of the factory's source file

    @classmethod
    def locate(
        cls,
        *,
        torchscript: str | None = None,
        factory: str | None = None,
        factory_params: Mapping[str, Any] | None = None,
        weights: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> ExternalSource:
        """Check that the files exist (and the factory resolves) and hash them."""
        if torchscript is not None:
            digest = file_digest(_existing_file(torchscript, "TorchScript file"))
            code = ""
        elif factory is not None:
            digest = file_digest(_existing_file(weights, "weights file")) if weights else ""
            code = factory_code_digest(factory)
        else:
            raise ModelError("a pretrained model needs a torchscript file or a factory")
        return cls(
            torchscript=torchscript,
            factory=factory,
            factory_params=dict(factory_params or {}),
            weights=weights,
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None,
            digest=digest,
            code_digest=code,
        )

    @property
    def path(self) -> str:
        """The file holding the weights (TorchScript or state dict), or '' if none."""
        return self.torchscript or self.weights or ""

    def describe(self) -> str:
        """One line for reports: what the model is and where it comes from."""
        if self.torchscript is not None:
            return f"TorchScript {self.torchscript}"
        return f"{self.factory} + {self.weights}" if self.weights else f"{self.factory}"

    def key(self) -> dict[str, Any]:
        """What the model's outputs depend on: contents and settings, not file locations."""
        return {
            "kind": "torchscript" if self.torchscript is not None else "factory",
            "factory": self.factory,
            "factory_params": self.factory_params,
            "mean": self.mean,
            "std": self.std,
            "digest": self.digest,
            "code_digest": self.code_digest,
        }

    def card(self) -> dict[str, Any]:
        """The model card a study records for it."""
        return {
            "architecture": self.describe(),
            "pretrained": True,
            "source": self.path,
            "sha256": self.digest,
            "cache_key": self.digest[:20],
            **({"factory_params": self.factory_params} if self.factory else {}),
            **({"normalize": {"mean": self.mean, "std": self.std}} if self.mean else {}),
        }

    def load(
        self,
        image_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
    ) -> nn.Module:
        """The model, probed on ``image_shape`` / ``num_classes`` when given.

        Raises:
            ModelError: if a file changed since :meth:`locate` hashed it (the study's keys
                would no longer describe it), or as :func:`load_external_model`.
        """
        if self.path and file_digest(self.path) != self.digest:
            raise ModelError(
                f"{self.path} changed after the study was planned; run the study again"
            )
        return load_external_model(
            torchscript=self.torchscript,
            factory=self.factory,
            factory_params=self.factory_params,
            weights=self.weights,
            mean=self.mean,
            std=self.std,
            image_shape=image_shape,
            num_classes=num_classes,
            device=device,
        )


@MODELS.register("external_factory", tags=("external",))
def external_factory(
    reference: str,
    params: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    code_digest: str = "",
) -> nn.Module:
    """A user architecture from a ``module:factory`` reference, for robustlab to train.

    Args:
        reference: ``package.module:name`` or ``path/to/file.py:name``.
        params: keyword arguments of the factory.
        mean: input normalisation means, wrapped in front of the network (None for none).
        std: input normalisation standard deviations.
        code_digest: hash of the factory's source file; not used to build the network, it is
            part of the training recipe so that editing the architecture's code trains a new
            model instead of serving a cached one (the planner fills it in).
    """
    return with_normalization(build_from_factory(reference, params), mean, std)
