from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path | None:
    """The offline datasets: $ROBUSTLAB_DATA, else ../shared/datasets beside the repository."""
    candidates = [os.environ.get("ROBUSTLAB_DATA"), REPO.parent / "shared" / "datasets"]
    for c in candidates:
        if c and (Path(c) / "MNIST" / "raw").is_dir():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole test session, never the user's."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(model_cache))
    yield


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    found = shared_datasets()
    if found is None:
        pytest.skip("real MNIST not available (set ROBUSTLAB_DATA or put shared/ beside the repo)")
    return found
