"""Where robustlab reads data and keeps trained models.

Data directory: ``--data-dir`` beats ``ROBUSTLAB_DATA`` beats ``<user cache>/data``.
Model cache: ``ROBUSTLAB_CACHE`` beats ``<user cache>/models``. The user cache is
``$XDG_CACHE_HOME/robustlab`` or ``~/.cache/robustlab``.

Example:
    >>> import os
    >>> os.environ["ROBUSTLAB_DATA"] = "/tmp/rl-data"
    >>> str(data_dir())
    '/tmp/rl-data'
    >>> str(data_dir("/elsewhere"))
    '/elsewhere'
    >>> del os.environ["ROBUSTLAB_DATA"]
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "ROBUSTLAB_DATA"
CACHE_ENV = "ROBUSTLAB_CACHE"


def user_cache_root() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/robustlab`` or ``~/.cache/robustlab``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robustlab"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit``, else ``$ROBUSTLAB_DATA``, else the user cache."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return user_cache_root() / "data"


def model_cache_dir() -> Path:
    """The trained-model cache: ``$ROBUSTLAB_CACHE``, else ``<user cache>/models``."""
    from_env = os.environ.get(CACHE_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return user_cache_root() / "models"
