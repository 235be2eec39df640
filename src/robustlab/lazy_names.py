"""Public names of a package imported on first use (PEP 562 module ``__getattr__``).

A package lists which module defines each of its public names; importing the package then
loads none of them, so ``import robustlab.<module>`` (a Ray worker, the command line's
``--help``) pays only for what that module needs.

Example:
    >>> getattr_, dir_ = lazy_names("demo", {"sqrt": "math"})
    >>> getattr_("sqrt")(4.0)
    2.0
    >>> "sqrt" in dir_()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_names(
    package: str, names: dict[str, str], namespace: dict[str, Any] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` that import ``names`` from their modules.

    Args:
        package: the package's name, for the error on an unknown name.
        names: public name -> the module that defines it.
        namespace: the package's ``globals()``; a name, once imported, is stored there so that
            later lookups skip ``__getattr__``.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.
    """
    stored = namespace if namespace is not None else {}

    def getattr_(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        stored[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*stored, *names})

    return getattr_, dir_
