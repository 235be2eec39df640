"""Bad-input suite, Python API and misleading messages (issue 15).

Every row is one input to a public function (``robustlab.create_degradation``, a degradation or
defence called on a tensor, ``load_model``...) or to a command whose message used to blame the
wrong thing; the harness (:mod:`bad_input`) checks that it ends with a clear error naming the
problem, where it is and the fix, or succeeds with the right result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import robustlab
from bad_input import Case, accepted, check, ids, refused
from robustlab.models import ModelCard, save_model


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _x(*shape: int, value: float | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if value is not None:
        return torch.full(shape, value, dtype=dtype)
    return torch.rand(shape, generator=_gen()).to(dtype)


def _degrade(x: torch.Tensor, name: str = "gaussian_noise", **params: Any) -> Any:
    return lambda d: lambda: robustlab.create_degradation(name, **params)(x, _gen())


def _defend(x: torch.Tensor, name: str = "median", **params: Any) -> Any:
    return lambda d: lambda: robustlab.create_defense(name, **params)(x)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    return lambda d: lambda: function(*args, **kwargs)


def _same_shape(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> Any:
    def verify(folder: Path, value: Any) -> None:
        assert tuple(value.shape) == shape
        if dtype is not None:
            assert value.dtype == dtype

    return verify


def _model(folder: Path, dataset: str = "mnist-sample", card: bool = True) -> Path:
    """An untrained lin2022 CNN saved with its card; a CIFAR-10 one takes 3x32x32 images."""
    torch.manual_seed(0)
    params = {"in_channels": 3, "image_size": 32} if dataset == "cifar10" else {}
    net = robustlab.create_model("lin2022_cnn", **params)
    card_ = ModelCard(architecture="lin2022_cnn", params=params, dataset=dataset)
    path = save_model(net, card_, folder / "cnn")
    if not card:
        path.with_suffix(".json").unlink()
    return path


class _NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 10), float("nan"))


def _image(folder: Path) -> Path:
    Image.new("L", (8, 8), 128).save(folder / "in.png")
    return folder / "in.png"


def _one_class(folder: Path) -> Any:
    (folder / "imgs" / "only").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (4, 4), i).save(folder / "imgs" / "only" / f"{i}.png")
    return lambda: robustlab.load_dataset("folder", path=str(folder / "imgs"))


def _attack(folder: Path, spec: str, *extra: str, model: Path | None = None) -> list[str]:
    path = model if model is not None else _model(folder)
    return ["attack", "--model", str(path), "--data", "mnist-sample", "--limit", "2",
            "--attack", spec, "--out", str(folder / "x.npz"), "--device", "cpu", *extra]  # fmt: skip


def _certify(folder: Path, *extra: str, model: Path | None = None) -> list[str]:
    path = model if model is not None else _model(folder)
    return ["certify", "--model", str(path), "--data", "mnist-sample", "--images", "2",
            "--n0", "4", "--n", "8", "--device", "cpu", "-q", *extra]  # fmt: skip


def _no_output(folder: Path) -> None:
    assert not (folder / "out.png").exists()


PY: list[Case] = [
    # Parameters of pieces: type, name, range.
    Case(
        "sigma-not-a-number",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", sigma="abc"),
        refused("gaussian_noise", "sigma", "a number", "'abc'", "e.g."),
    ),
    Case(
        "sigma-a-list",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", sigma=[0.1]),
        refused("gaussian_noise", "sigma", "a number", "[0.1]"),
    ),
    Case(
        "sigma-a-bool",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", sigma=True),
        refused("gaussian_noise", "sigma", "a number", "True"),
    ),
    Case(
        "sigma-negative",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", sigma=-0.1),
        refused("gaussian_noise", "sigma must be >= 0", "-0.1"),
    ),
    Case(
        "sigma-as-yaml-string",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", sigma="1e-1"),
        accepted(lambda d, v: None),
    ),
    Case(
        "unknown-parameter",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", sgma=0.1),
        refused("unknown parameter", "gaussian_noise", "sgma", "did you mean 'sigma'"),
    ),
    Case(
        "unknown-degradation",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gausian_noise"),
        refused("unknown degradation", "gausian_noise", "did you mean 'gaussian_noise'"),
    ),
    Case(
        "salt-pepper-amount-above-1",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "salt_pepper", amount=1.5),
        refused("salt_pepper", "amount must be in [0, 1]", "1.5"),
    ),
    Case(
        "salt-pepper-amount-text",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "salt_pepper", amount="abc"),
        refused("salt_pepper", "amount", "a number", "'abc'"),
    ),
    Case(
        "clip-not-a-bool",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "gaussian_noise", clip="no"),
        refused("gaussian_noise", "clip must be true or false", "'no'"),
    ),
    Case(
        "dead-pixels-negative-count",
        "python",
        "python-api",
        _call(robustlab.create_degradation, "dead_pixels", count=-2),
        refused("dead_pixels", "count must be an integer >= 0", "-2"),
    ),
    Case(
        "median-even-size",
        "python",
        "python-api",
        _call(robustlab.create_defense, "median", size=4),
        refused("median", "size", "odd", "got 4", "e.g. size=3"),
    ),
    Case(
        "median-negative-size",
        "python",
        "python-api",
        _call(robustlab.create_defense, "median", size=-3),
        refused("median", "size", "positive odd integer", "-3"),
    ),
    Case(
        "box-size-a-float",
        "python",
        "python-api",
        _call(robustlab.create_defense, "box", size=3.5),
        refused("box", "size", "odd integer", "3.5"),
    ),
    Case(
        "gaussian-filter-sigma-zero",
        "python",
        "python-api",
        _call(robustlab.create_defense, "gaussian", sigma=0),
        refused("gaussian", "sigma must be > 0", "0"),
    ),
    Case(
        "model-zero-channels",
        "python",
        "python-api",
        _call(robustlab.create_model, "lin2022_cnn", in_channels=0),
        refused("lin2022_cnn", "in_channels must be a whole number >= 1", "got 0", "e.g."),
    ),
    Case(
        "model-unknown-channels-keyword",
        "python",
        "python-api",
        _call(robustlab.create_model, "lin2022_cnn", channels=0),
        refused("lin2022_cnn", "channels", "did you mean 'in_channels'"),
    ),
    Case(
        "model-negative-image-size",
        "python",
        "python-api",
        _call(robustlab.create_model, "lin2022_cnn", image_size=-4),
        refused("lin2022_cnn", "image_size", ">= 1", "-4"),
    ),
    Case(
        "model-zero-classes",
        "python",
        "python-api",
        _call(robustlab.create_model, "lin2022_cnn", num_classes=0),
        refused("lin2022_cnn", "num_classes", ">= 1", "got 0"),
    ),
    Case(
        "dataset-unknown-parameter",
        "python",
        "python-api",
        _call(robustlab.load_dataset, "mnist-sample", image_size=-1),
        refused("mnist-sample", "image_size", "valid: data_dir, download"),
    ),
    Case(
        "dataset-unknown-name",
        "python",
        "python-api",
        _call(robustlab.load_dataset, "mnsit"),
        refused("unknown dataset 'mnsit'", "did you mean 'mnist'"),
    ),
    Case(
        "strategy-unknown-name",
        "python",
        "python-api",
        _call(robustlab.create_strategy, "standrad"),
        refused("unknown strategy 'standrad'", "did you mean 'standard'"),
    ),
    Case(
        "defended-with-a-name",
        "python",
        "python-api",
        _call(robustlab.defended, nn.Flatten(), "median"),
        refused("defended()", "defense", "nn.Module", "'median'", "create_defense"),
    ),
    # Image batches given to a degradation or a defence.
    Case(
        "degrade-uint8",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8, value=200, dtype=torch.uint8)),
        refused("input of GaussianNoise", "floating point", "uint8", "x.float() / 255"),
    ),
    Case(
        "degrade-3d",
        "python",
        "python-api",
        _degrade(_x(1, 8, 8)),
        refused("input of GaussianNoise", "(N, C, H, W)", "(1, 8, 8)", "unsqueeze(0)"),
    ),
    Case(
        "degrade-2d",
        "python",
        "python-api",
        _degrade(_x(8, 8)),
        refused("input of GaussianNoise", "(N, C, H, W)", "(8, 8)"),
    ),
    Case(
        "degrade-0-255-floats",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8, value=200.0), "salt_pepper"),
        refused("input of SaltPepper", "[0, 1]", "200", "divide", "by 255"),
    ),
    Case(
        "degrade-negative-values",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8, value=-0.5), "gaussian_blur", sigma=1.0),
        refused("input of GaussianBlur", "[0, 1]", "-0.5"),
    ),
    Case(
        "degrade-nan",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8, value=float("nan"))),
        refused("input of GaussianNoise", "NaN", "finite"),
    ),
    Case(
        "degrade-inf",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8, value=float("inf")), "jpeg"),
        refused("input of JPEG", "infinite", "finite"),
    ),
    Case(
        "degrade-numpy-array",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8).numpy()),  # type: ignore[arg-type]
        refused("input of GaussianNoise", "torch.Tensor", "ndarray", "torch.as_tensor"),
    ),
    Case(
        "degrade-no-generator",
        "python",
        "python-api",
        lambda d: lambda: robustlab.create_degradation("salt_pepper")(_x(1, 1, 8, 8), None),  # type: ignore[arg-type]
        refused("SaltPepper", "torch.Generator", "NoneType", "manual_seed"),
    ),
    Case(
        "degrade-too-many-pixels",
        "python",
        "python-api",
        _degrade(_x(1, 1, 8, 8), "hot_pixels", count=100),
        refused("count must be in [0, H*W]", "8x8", "100"),
    ),
    Case(
        "degrade-float64-kept",
        "python",
        "python-api",
        _degrade(_x(2, 1, 8, 8, dtype=torch.float64), "salt_pepper", amount=0.2),
        accepted(_same_shape((2, 1, 8, 8), torch.float64)),
    ),
    Case(
        "degrade-float16-kept",
        "python",
        "python-api",
        _degrade(_x(2, 3, 8, 8, dtype=torch.float16), "gaussian_noise"),
        accepted(_same_shape((2, 3, 8, 8), torch.float16)),
    ),
    Case(
        "degrade-empty-batch",
        "python",
        "python-api",
        _degrade(_x(0, 1, 8, 8), "dead_pixels"),
        accepted(_same_shape((0, 1, 8, 8))),
    ),
    Case(
        "compose-unclipped-steps",
        "python",
        "python-api",
        _degrade(
            _x(2, 1, 8, 8),
            "compose",
            steps=["gaussian_noise:sigma=0.5,clip=false", "gaussian_blur:sigma=1"],
        ),
        accepted(_same_shape((2, 1, 8, 8))),
    ),
    Case(
        "defence-uint8",
        "python",
        "python-api",
        _defend(_x(1, 1, 8, 8, value=3, dtype=torch.uint8)),
        refused("input of defence 'median'", "floating point", "uint8", "/ 255"),
    ),
    Case(
        "defence-3d",
        "python",
        "python-api",
        _defend(_x(1, 8, 8), "box"),
        refused("input of defence 'box'", "(N, C, H, W)", "(1, 8, 8)", "unsqueeze(0)"),
    ),
    Case(
        "defence-nan",
        "python",
        "python-api",
        _defend(_x(1, 1, 8, 8, value=float("nan")), "gaussian"),
        refused("input of defence 'gaussian'", "NaN", "finite"),
    ),
    Case(
        "defence-size-too-large",
        "python",
        "python-api",
        _defend(_x(1, 1, 8, 8), "median", size=21),
        refused("MedianFilter(size=21)", "too large for 8x8 images", "at most 15"),
    ),
    Case(
        "defence-float64-kept",
        "python",
        "python-api",
        _defend(_x(2, 1, 8, 8, dtype=torch.float64), "median"),
        accepted(_same_shape((2, 1, 8, 8), torch.float64)),
    ),
    Case(
        "defence-empty-batch",
        "python",
        "python-api",
        _defend(_x(0, 1, 8, 8), "median"),
        accepted(_same_shape((0, 1, 8, 8))),
    ),
    Case(
        "defence-noisy-copies",
        "python",
        "python-api",  # randomised smoothing's input
        _defend(_x(2, 1, 8, 8) * 3 - 1, "box"),
        accepted(_same_shape((2, 1, 8, 8))),
    ),
    # load_model.
    Case(
        "load-model-none",
        "python",
        "python-api",
        _call(robustlab.load_model, None),
        refused("load_model", "path of a saved model", "None", "e.g."),
    ),
    Case(
        "load-model-int",
        "python",
        "python-api",
        _call(robustlab.load_model, 123),
        refused("load_model", "path of a saved model", "123", "int"),
    ),
    Case(
        "load-model-missing",
        "python",
        "python-api",
        _call(robustlab.load_model, "missing.safetensors"),
        refused("no saved model at missing.safetensors", "missing.json", "check the path"),
    ),
    Case(
        "load-model-folder",
        "python",
        "python-api",
        lambda d: (_model(d), lambda: robustlab.load_model(d))[1],
        refused("is a folder", "cnn.safetensors", "pass the model's .safetensors"),
    ),
    Case(
        "load-model-without-card",
        "python",
        "python-api",
        lambda d: (lambda p: lambda: robustlab.load_model(p))(_model(d, card=False)),
        refused("no model card", "cnn.json", "beside it"),
    ),
    Case(
        "load-model-bad-device",
        "python",
        "python-api",
        lambda d: (lambda p: lambda: robustlab.load_model(p, device="cuda:9"))(_model(d)),
        refused("device 'cuda:9'", "available here: cpu"),
    ),
]

MESSAGES: list[Case] = [
    Case(
        "degrade-bad-amount-blames-the-spec",
        "degrade",
        "messages",
        lambda d: ["degrade", str(_image(d)), "-d", "salt_pepper:amount=abc", "-o", "out.png"],
        refused("-d salt_pepper:amount=abc", "amount", "a number", "'abc'", after=_no_output),
    ),
    Case(
        "degrade-huge-seed",
        "degrade",
        "messages",
        lambda d: [
            "degrade",
            str(_image(d)),
            "-d",
            "salt_pepper",
            "-o",
            "out.png",
            "--seed",
            str(2**70),
        ],
        refused("--seed", "out of range", "64-bit", "--seed 0", after=_no_output),
    ),
    Case(
        "degrade-even-median",
        "degrade",
        "messages",
        lambda d: ["degrade", str(_image(d)), "--defense", "median:size=4", "-o", "out.png"],
        refused("--defense median:size=4", "odd", "e.g. size=3", after=_no_output),
    ),
    Case(
        "degrade-missing-cuda-device",
        "degrade",
        "messages",
        lambda d: ["degrade", str(_image(d)), "-o", "out.png", "--device", "cuda:9"],
        refused("device 'cuda:9'", "available here", after=_no_output),
    ),
    Case(
        "folder-dataset-one-class",
        "python",
        "messages",
        _one_class,
        refused("1 class folder", "only", "at least two classes", "sub-folder"),
    ),
    Case(
        "folder-dataset-missing",
        "python",
        "messages",
        _call(robustlab.load_dataset, "folder", path="/nonexistent/robustlab-images"),
        refused("image folder not found", "no folder at /nonexistent/robustlab-images", "Fix:"),
    ),
    Case(
        "nan-logits-name-model-and-cell",
        "python",
        "messages",
        lambda d: lambda: _evaluate_nan_model(),
        refused(
            "model 'broken'",
            "gaussian_noise",
            "defence none",
            "NaN logits",
            "check the model's weights",
            "normalisation",
        ),
    ),
    Case(
        "attack-eps-zero",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd:eps=0"),
        refused("--attack pgd:eps=0", "eps=0", "budget > 0"),
    ),
    Case(
        "attack-eps-negative",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd:eps=-0.1"),
        refused("--attack pgd:eps=-0.1", "eps must be a finite number >= 0"),
    ),
    Case(
        "attack-linf-eps-above-1",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd:eps=8"),
        refused("--attack pgd:eps=8", "[0, 1] pixel range", "8/255"),
    ),
    Case(
        "attack-unknown-name",
        "attack",
        "messages",
        lambda d: _attack(d, "pgdd"),
        refused("unknown attack 'pgdd'", "did you mean 'pgd'"),
    ),
    Case(
        "attack-missing-model",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd", model=d / "nope.safetensors"),
        refused("no saved model at", "nope.safetensors", "check the path"),
    ),
    Case(
        "attack-model-folder-without-card",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd", model=_model(d, card=False).parent),
        refused("is a folder", "cnn.safetensors"),
    ),
    Case(
        "attack-model-of-another-dataset",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd:eps=0.1,steps=1", model=_model(d, dataset="cifar10")),
        refused("trained on 'cifar10'", "--data mnist-sample", "use --data cifar10"),
    ),
    Case(
        "attack-model-of-a-similar-dataset",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd:eps=0.1,steps=1", model=_model(d, dataset="fashion-mnist")),
        accepted(lambda d, out: _assert_in(out, "warning", "trained on 'fashion-mnist'")),
    ),
    Case(
        "attack-huge-seed",
        "attack",
        "messages",
        lambda d: _attack(d, "pgd", "--seed", str(2**70)),
        refused("--seed", "64-bit"),
    ),
    Case(
        "certify-images-zero",
        "certify",
        "messages",
        lambda d: _certify(d, "--images", "0"),
        refused("--images"),
    ),
    Case(
        "certify-negative-sigma",
        "certify",
        "messages",
        lambda d: _certify(d, "--sigma", "-0.5"),
        refused("--sigma"),
    ),
    Case(
        "certify-missing-model",
        "certify",
        "messages",
        lambda d: _certify(d, model=d / "nope.safetensors"),
        refused("no saved model at", "nope.safetensors"),
    ),
    Case(
        "certify-model-without-card",
        "certify",
        "messages",
        lambda d: _certify(d, model=_model(d, card=False)),
        refused("no model card", "cnn.json"),
    ),
    Case(
        "certify-model-of-another-dataset",
        "certify",
        "messages",
        lambda d: _certify(d, model=_model(d, dataset="cifar10")),
        refused("trained on 'cifar10'", "use --data cifar10"),
    ),
    Case(
        "list-unknown-kind",
        "list",
        "messages",
        lambda d: ["list", "degradatons"],
        refused("degradatons"),
    ),
]

CASES: list[Case] = PY + MESSAGES


def _assert_in(output: str, *fragments: str) -> None:
    flat = " ".join(output.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {output}"


def _evaluate_nan_model() -> Any:
    from types import SimpleNamespace

    from robustlab.study.executor import evaluate_group

    setting = SimpleNamespace(
        name="gaussian_noise", params={"sigma": 0.1}, label="gaussian_noise sigma=0.1"
    )
    group = SimpleNamespace(model=SimpleNamespace(id="broken"), setting=setting, seed=0)
    test = robustlab.load_dataset("mnist-sample").test.subset(4)
    return evaluate_group(_NaNModel(), group, test, 10, batch_size=4, device=torch.device("cpu"),  # type: ignore[arg-type]
                          defenses={"none": robustlab.create_defense("none")})  # fmt: skip


def test_table_covers_the_entries_and_kinds() -> None:
    assert len(CASES) >= 45 and len(set(ids(CASES))) == len(CASES)
    assert {c.entry for c in CASES} >= {"python", "degrade", "attack", "certify", "list"}
    assert {c.kind for c in CASES} == {"python-api", "messages"}


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check(case, tmp_path, monkeypatch)
