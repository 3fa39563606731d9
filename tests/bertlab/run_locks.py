"""Watching a run directory's lock (or any lock file) from outside, as a rerun would meet it: whether it is held,
and waiting for a condition (a holder dying) with a deadline."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable


def locked(directory: str) -> bool:
    """Whether some process holds ``directory``'s ``exclusive_dir`` lock (never, when it has no lock file)."""
    return held(os.path.join(directory, ".bertlab.lock"))


def held(path: str) -> bool:
    """Whether some process holds a ``flock`` on the file ``path`` (never, when there is no such file)."""
    if not os.path.exists(path):
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether ``condition`` holds within ``seconds`` (polled every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()
