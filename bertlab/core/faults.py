"""Named fault points for the crash tests: ``fault_point(site)`` kills the run with SIGKILL on a chosen visit.

``BERTLAB_FAULT=SITE:N`` sends SIGKILL to this process's whole process group the N-th time ``SITE`` is reached:
the stage, its tokenizing workers and the ``bertlab pipeline`` that started them all die at once, as in a lost
machine or ``kill -9`` of a job. ``BERTLAB_FAULT_DIR=DIR`` counts the visits across every process of the run
(a line per visit in ``DIR/visits``, in order), so that N counts over the stages of a pipeline; without it each
process counts its own. With ``BERTLAB_FAULT_DIR`` alone the visits are only recorded: how a test learns which
moments a whole run passes through. Unset, as outside the tests, a visit costs one environment lookup.

The sites (``SITES``) are placed just before the state they name changes on disk, where a kill leaves the most
behind: a shard or split about to be tokenized, a cache entry written but not yet renamed into place, a training
step's end, an export or a predictions file written but not yet renamed, a stage's record about to be written.
"""

from __future__ import annotations

import os
import signal

SITES = ("tokenize", "cache_write", "train_step", "export", "predictions", "stage_record")
_visits: dict[str, int] = {}


def _count(site: str, directory: str | None) -> int:
    """This visit's number (1, 2, ...) among the run's visits of ``site``."""
    if directory is None:
        _visits[site] = _visits.get(site, 0) + 1
        return _visits[site]
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "visits"), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{site}\n".encode())  # O_APPEND: concurrent visitors (tokenizing workers) never interleave
        end = os.lseek(fd, 0, os.SEEK_CUR)
        return os.pread(fd, end, 0).decode().splitlines().count(site)
    finally:
        os.close(fd)


def fault_point(site: str) -> None:
    """Kill the run here when ``BERTLAB_FAULT`` names this visit of ``site`` (see the module docstring)."""
    spec, directory = os.environ.get("BERTLAB_FAULT"), os.environ.get("BERTLAB_FAULT_DIR")
    if not spec and not directory:
        return
    n = _count(site, directory)
    target, _, at = (spec or "").partition(":")
    if target == site and at.isdigit() and n == int(at):
        os.killpg(os.getpgid(0), signal.SIGKILL)
