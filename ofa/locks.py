"""One training of a phase at a time: an exclusive lock beside the phase's resume state.

Two runs of the same phase would overwrite each other's resume points and checkpoint; the
second one is refused, naming the process that holds the lock. The lock is an flock on a small
file that records the holder's pid; the kernel releases it when the holder dies, so a killed
run never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ofa.errors import OFAError

HELD_ENV = "OFA_PHASE_LOCK_HELD"  # set for the workers a lock holder starts
ATTEMPTS = 5  # a lock file removed by its releasing holder while we opened it: open again


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) or fail at once naming the holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OFAError(f"{what} is already running in process {holder} (lock {path}); "
                           "wait for it to finish or stop it") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file its holder had just removed
    else:
        raise OFAError(f"could not take the lock {path} for {what}")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        try:
            path.parent.rmdir()  # only when nothing else is in it
        except OSError:
            pass
