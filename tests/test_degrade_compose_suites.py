from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.degrade import (
    DEGRADATIONS,
    SUITES,
    Compose,
    SuiteEntry,
    create_degradation,
    expand_suite,
)
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.study.config import DegradationConfig


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------- compose


def test_steps_run_in_order_with_one_generator() -> None:
    x = torch.rand(4, 3, 16, 16, generator=_gen(9))
    chain = create_degradation("compose", steps=["gaussian_noise:sigma=0.1", "jpeg:quality=30"])
    g = _gen(1)
    expected = create_degradation("jpeg", quality=30)(
        create_degradation("gaussian_noise", sigma=0.1)(x, g), g
    )
    assert torch.equal(chain(x, _gen(1)), expected)
    assert torch.equal(chain(x, _gen(1)), chain(x, _gen(1)))
    assert not torch.equal(chain(x, _gen(1)), chain(x, _gen(2)))
    # Two random steps draw one after the other from the same generator.
    two = Compose(["gaussian_noise:sigma=0.1", "salt_pepper:amount=0.1"])
    g = _gen(3)
    second = create_degradation("salt_pepper", amount=0.1)(
        create_degradation("gaussian_noise", sigma=0.1)(x, g), g
    )
    assert torch.equal(two(x, _gen(3)), second)


def test_mapping_steps_and_overrides() -> None:
    chain = Compose(
        [{"name": "gaussian_noise_255", "params": {"sigma": 10}}, {"name": "jpeg"}],
        **{"jpeg.quality": 20, "gaussian_noise_255.sigma": 4},
    )
    assert repr(chain) == "Compose(GaussianNoise255(sigma=4.0), JPEG(quality=20))"
    assert chain.params() == {
        "steps": [
            {"name": "gaussian_noise_255", "params": {"sigma": 4}},
            {"name": "jpeg", "params": {"quality": 20}},
        ]
    }
    assert repr(Compose(**chain.params())) == repr(chain)


def test_random_is_true_if_any_step_is() -> None:
    assert Compose(["gaussian_noise:sigma=0.1", "jpeg"]).random
    assert not Compose(["gaussian_blur:sigma=1", "jpeg:quality=10"]).random
    assert not Compose(["gaussian_blur:sigma=1", "jpeg2000:psnr=30"]).random


def test_index_overrides_for_repeated_steps() -> None:
    chain = Compose(
        ["jpeg:quality=90", "gaussian_blur", "jpeg:quality=90"], **{"2.quality": 10, "1.sigma": 2}
    )
    assert [s.params() for s in chain.steps] == [
        {"quality": 90},
        {"sigma": 2.0, "radius": 8},
        {"quality": 10},
    ]
    with pytest.raises(
        InvalidParameterError,
        match=r"'jpeg\.quality' of compose is ambiguous: 2 steps are named 'jpeg'.*'0\.quality'",
    ):
        Compose(["jpeg", "jpeg"], **{"jpeg.quality": 10})


def test_a_study_grid_sweeps_one_step() -> None:
    config = DegradationConfig.model_validate(
        {
            "name": "compose",
            "params": {"steps": ["gaussian_noise_255:sigma=10", "jpeg"]},
            "grid": {"jpeg.quality": [10, 50, 90]},
        }
    )
    assert config.swept == "jpeg.quality"
    chains = [create_degradation(config.name, **params) for params in config.settings()]
    assert [c.steps[1].params()["quality"] for c in chains] == [10, 50, 90]


@pytest.mark.parametrize(
    ("steps", "overrides", "error", "message"),
    [
        (["jepg"], {}, UnknownNameError, r"unknown degradation 'jepg'.*did you mean 'jpeg'"),
        (
            ["jpeg"],
            {"jpg.quality": 5},
            UnknownNameError,
            r"unknown override key of compose 'jpg\.quality'; valid: 0\.quality, jpeg\.quality",
        ),
        (
            ["jpeg"],
            {"jpeg.qualty": 5},
            UnknownNameError,
            r"'jpeg\.qualty'; valid: 0\.quality, jpeg\.quality \(did you mean 'jpeg\.quality'\?\)",
        ),
        (
            ["jpeg"],
            {"jpeg": 5},
            UnknownNameError,
            r"unknown override key of compose 'jpeg'; valid: 0\.quality, jpeg\.quality",
        ),
        (
            ["jpeg"],
            {"3.quality": 5},
            UnknownNameError,
            r"'3\.quality'; valid: 0\.quality, jpeg\.quality",
        ),
        (
            ["jpeg"],
            {"jpeg.quality": 0},
            InvalidParameterError,
            r"quality must be an integer in \[1, 100\], got 0",
        ),
        (["gaussian_noise:sigma"], {}, InvalidParameterError, r"malformed parameter 'sigma'"),
        (
            ["gaussian_noise:amount=0.1"],
            {},
            UnknownNameError,
            r"unknown parameter of degradation 'gaussian_noise' 'amount'",
        ),
        ([42], {}, InvalidParameterError, r"step 0 of compose must be a spec string .* got 42"),
        ([{"name": "jpeg", "quality": 5}], {}, InvalidParameterError, r"step 0 of compose must be"),
        ([], {}, InvalidParameterError, r"steps of compose must be a non-empty list"),
        (
            "jpeg",
            {},
            InvalidParameterError,
            r"steps of compose must be a non-empty list of degradations, got 'jpeg'",
        ),
    ],
)
def test_bad_compositions(
    steps: Any, overrides: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        create_degradation("compose", steps=steps, **overrides)


def test_compose_is_registered_with_open_keywords() -> None:
    entry = DEGRADATIONS.entry("compose")
    assert entry.open_keywords and entry.parameter_names == ["steps"]
    DEGRADATIONS.check_parameters("compose", {"steps": ["jpeg"], "jpeg.quality": 10})


# ------------------------------------------------------------------------------------ suites


def test_published_corruption_levels() -> None:
    def levels(suite: str) -> dict[str, tuple[str, str, tuple[float, ...]]]:
        return {e.label: (e.degradation, e.parameter, e.values) for e in expand_suite(suite)}

    assert levels("cifar-c") == {
        "gaussian_noise": ("gaussian_noise", "sigma", (0.04, 0.06, 0.08, 0.09, 0.10)),
        "impulse_noise": ("salt_pepper", "amount", (0.01, 0.02, 0.03, 0.05, 0.07)),
        "gaussian_blur": ("gaussian_blur", "sigma", (0.4, 0.6, 0.7, 0.8, 1.0)),
        "jpeg": ("jpeg", "quality", (80, 65, 58, 50, 40)),
    }
    assert levels("imagenet-c") == {
        "gaussian_noise": ("gaussian_noise", "sigma", (0.08, 0.12, 0.18, 0.26, 0.38)),
        "impulse_noise": ("salt_pepper", "amount", (0.03, 0.06, 0.09, 0.17, 0.27)),
        "gaussian_blur": ("gaussian_blur", "sigma", (1, 2, 3, 4, 6)),
        "jpeg": ("jpeg", "quality", (25, 18, 15, 10, 7)),
    }


def test_paper_grids() -> None:
    assert [e.values for e in expand_suite("lin2022")] == [(0.1, 0.2, 0.3), (0.1, 0.2, 0.3)]
    (aghdam,) = expand_suite("aghdam2016")
    assert (aghdam.degradation, aghdam.values) == (
        "gaussian_noise_255",
        (1, 2, 4, 8, 10, 14, 18, 20, 25, 30, 35, 40),
    )
    cavey = {e.label: e for e in expand_suite("cavey")}
    assert cavey["gaussian_noise"].values == (0.001, 0.01325, 0.0255, 0.03775, 0.05)
    assert cavey["gaussian_noise"].degradation == "gaussian_noise_variance"
    assert cavey["gaussian_blur"].values == (0.4, 0.55, 0.7, 0.85, 1.0)
    assert cavey["gaussian_blur_alt"].values == (0.04, 0.28, 0.52, 0.76, 1.0)
    for name in ("dead_pixels", "hot_pixels", "stuck_pixels"):
        assert cavey[name].values == (1, 2, 3, 4, 5)
    ghosh = {e.label: e for e in expand_suite("ghosh2018")}
    assert ghosh["jpeg"].values[0] == 1 and ghosh["jpeg"].values[-1] == 100
    assert {10, 5, 20} <= set(ghosh["jpeg"].values)
    assert ghosh["blur+jpeg"].params == {"steps": ["gaussian_blur:sigma=1.0,radius=4", "jpeg"]}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_level_of_every_suite_builds_and_runs(suite: str) -> None:
    x = torch.rand(2, 3, 16, 16, generator=_gen(4))
    entries = expand_suite(suite)
    assert len({e.label for e in entries}) == len(entries), "labels must be unique"
    for entry in entries:
        assert isinstance(entry, SuiteEntry) and entry.values
        config = DegradationConfig.model_validate(entry.config())
        assert config.label == entry.label and config.swept == entry.parameter
        for params in config.settings():
            degradation = create_degradation(config.name, **params)
            if params[entry.parameter] == entry.values[-1]:  # run the strongest level
                y = degradation(x, _gen())
                assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_expand_suite_returns_copies() -> None:
    entries = expand_suite("ghosh2018")
    entries[2].params["steps"].append("jpeg")
    entries.clear()
    assert len(SUITES["ghosh2018"]) == 6 and len(SUITES["ghosh2018"][2].params["steps"]) == 2


def test_unknown_suite() -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"unknown suite 'cifar10-c'; valid: aghdam2016, cavey, cifar-c, ghosh2018, imagenet-c, lin2022 \(did you mean 'cifar-c'\?\)",
    ):
        expand_suite("cifar10-c")
