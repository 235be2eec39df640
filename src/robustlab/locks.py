"""Advisory file locks: one process at a time trains a cache entry or writes a run directory.

Several workers of a Ray cluster (or two studies on one machine) may ask for the same cached
model or the same adversarial training set at once. Each such entry is guarded by a lock file
beside it (``fcntl.flock``, released by the kernel when its holder dies, so a killed worker
never leaves a stale lock); the second asker waits, then finds the entry finished. On a
platform without ``fcntl`` the lock is a no-op.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> with exclusive(folder / ".lock"):
    ...     (folder / "weights").write_text("trained once")
    12
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]


@contextmanager
def exclusive(
    path: str | os.PathLike[str], on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Blocks while another process holds it; ``on_wait`` is called first with the holder's
    process id as it wrote it into the file (or ``"?"``). The lock file itself is left in place
    (deleting it would let a third process lock a different inode).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    handle.seek(0)
                    on_wait(handle.read().strip() or "?")
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
