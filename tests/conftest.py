from __future__ import annotations

import functools
import http.server
import os
import threading
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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (a stand-in download mirror), and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
