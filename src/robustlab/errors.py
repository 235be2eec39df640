"""Exceptions that carry a message a user can act on.

Every error robustlab raises on bad input derives from :class:`RobustlabError`, so the CLI can
print it without a traceback and programs can catch the whole family at once.

Example:
    >>> try:
    ...     raise UnknownNameError("degradation", "gaus", ["gaussian_noise", "salt_pepper"])
    ... except RobustlabError as err:
    ...     print(err)
    unknown degradation 'gaus'; valid: gaussian_noise, salt_pepper (did you mean 'gaussian_noise'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RobustlabError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug."""


class UnknownNameError(RobustlabError, KeyError):
    """A name (dataset, model, degradation, defence, parameter) that no registry knows."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        message = f"unknown {kind} '{name}'; valid: {', '.join(self.valid) or '(none)'}"
        close = (
            difflib.get_close_matches(name, self.valid, n=1)
            or [v for v in self.valid if name and v.startswith(name)][:1]
            or [v for v in self.valid if name and name in v][:1]
        )
        if close:
            message += f" (did you mean '{close[0]}'?)"
        super().__init__(message)

    def __str__(self) -> str:
        # KeyError would wrap the message in quotes.
        return str(self.args[0])


class InvalidParameterError(RobustlabError, ValueError):
    """A parameter value that is out of range or of the wrong type."""


class ConfigError(RobustlabError, ValueError):
    """A study file that cannot be read or does not validate."""


class DataError(RobustlabError, OSError):
    """A dataset file that is missing, truncated, corrupt or of the wrong format."""


class ModelError(RobustlabError, ValueError):
    """A model that cannot be loaded or whose outputs do not fit the data."""
