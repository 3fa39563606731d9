"""Child processes that never outlive the run that started them.

A pipeline runs each stage in a child process, and ``bertlab ablate`` runs each job in one; a stage tokenizes
with forked workers. When the parent is killed (``kill -9`` of its pid alone, not of its process group), a
child left running would go on writing into a run directory whose lock has just been released, racing the
rerun. Two things prevent that:

- ``child_env()`` names the parent in the child's environment, and the child's first act, ``tie_to_starter()``,
  asks Linux to SIGKILL it when that parent dies (``PR_SET_PDEATHSIG``). A parent already gone by then kills it
  at once. Forked workers call ``tie_to(pid)`` themselves.
- The child inherits the locks its parent holds (``bertlab.core.files.held_locks``), so a directory stays locked
  until the last process that could write into it has died, and a rerun meanwhile gets the usual clear error.

Elsewhere than Linux, ``tie_to`` does nothing, and only the inherited locks remain.
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "BERTLAB_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child that must die with this process (it calls ``tie_to_starter`` first)."""
    return {**env, PARENT_ENV: str(os.getpid())}


def tie_to(parent: int) -> None:
    """SIGKILL this process when ``parent`` (its parent) dies, and now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the inherited locks still keep the rerun out
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def tie_to_starter() -> None:
    """``tie_to`` the process named by ``child_env``, if any. The name leaves the environment, so the
    processes this one starts (DDP ranks, loader workers) are not checked against a pid that is not theirs."""
    parent = os.environ.pop(PARENT_ENV, "")
    if parent.isdigit():
        tie_to(int(parent))
