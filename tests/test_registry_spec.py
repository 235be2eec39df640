from __future__ import annotations

import pytest

from robustlab.defend import DEFENSES
from robustlab.degrade import DEGRADATIONS, create_degradation
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.spec import format_spec, parse_spec


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        create_degradation("gausian_noise", sigma=0.1)
    message = str(err.value)
    assert "unknown degradation 'gausian_noise'" in message
    for name in DEGRADATIONS.names():
        assert name in message
    assert "did you mean 'gaussian_noise'" in message


def test_unknown_parameter_lists_valid_parameters() -> None:
    with pytest.raises(UnknownNameError, match="valid: amount"):
        create_degradation("salt_pepper", sigma=0.1)
    with pytest.raises(UnknownNameError, match="valid: size"):
        DEFENSES.create("median", radius=1)


def test_registry_entries_have_summaries_and_severity() -> None:
    for registry in (DEGRADATIONS, DEFENSES):
        for entry in registry:
            assert entry.summary, entry.name
    assert DEGRADATIONS.entry("salt_pepper").severity == "amount"
    assert DEGRADATIONS.entry("gaussian_noise").severity == "sigma"


@pytest.mark.parametrize(
    ("text", "name", "params"),
    [
        ("median", "median", {}),
        ("median:size=3", "median", {"size": 3}),
        ("salt_pepper:amount=0.2", "salt_pepper", {"amount": 0.2}),
        (" gaussian : sigma=1.5 , size=7 ", "gaussian", {"sigma": 1.5, "size": 7}),
    ],
)
def test_parse_spec(text: str, name: str, params: dict[str, object]) -> None:
    assert parse_spec(text) == (name, params)
    assert parse_spec(format_spec(name, params)) == (name, params)


@pytest.mark.parametrize("text", ["", ":size=3", "median:size", "median:=3"])
def test_parse_spec_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidParameterError):
        parse_spec(text)
