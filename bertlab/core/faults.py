"""Named fault points for the crash tests: ``fault_point(site)`` kills the run with SIGKILL on a chosen visit.

``BERTLAB_FAULT=SITE:N`` sends SIGKILL to this process's whole process group the N-th time ``SITE`` is reached:
the stage, its tokenizing workers and the ``bertlab pipeline`` that started them all die at once, as in a lost
machine or ``kill -9`` of a job. ``BERTLAB_FAULT=STAGE/SITE:N`` counts only the visits inside the pipeline stage
``STAGE`` (the pipeline names the stage it runs in ``BERTLAB_STAGE``), and a training step is numbered by its global
step: a rerun, which starts a killed stage again from its start or resumes its fit from a checkpoint, meets that
stage's later moments under the same numbers. ``BERTLAB_FAULT_DIR=DIR`` counts the visits
across every process of the run (a line per visit in ``DIR/visits``, in order: ``STAGE/SITE`` inside a stage);
without it each process counts its own. With ``BERTLAB_FAULT_DIR`` alone the visits are only recorded: how a test
learns which moments a whole run passes through. Unset, as outside the tests, a visit costs one environment lookup.

The sites (``SITES``) are placed just before the state they name changes on disk, where a kill leaves the most
behind: a shard or split about to be tokenized, a cache entry written but not yet renamed into place, a training
step's end, an export or a predictions file written but not yet renamed, a stage's record about to be written.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

SITES = ("tokenize", "cache_write", "train_step", "export", "predictions", "stage_record")
_visits: list[str] = []


def _names(visit: str, target: str) -> bool:
    """Whether ``target`` names the visit ``STAGE/SITE`` (or ``SITE``): by the whole of it, or by its site."""
    return target in (visit, visit.rpartition("/")[2])


def _count(visit: str, target: str, directory: str | None) -> int:
    """How many of the run's visits so far, this one included, ``target`` names (0 when it does not name this)."""
    if directory is None:
        _visits.append(visit)
        seen = _visits
    else:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, "visits"), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{visit}\n".encode())  # O_APPEND: concurrent visitors (tokenizing workers) never interleave
            seen = os.pread(fd, os.lseek(fd, 0, os.SEEK_CUR), 0).decode().splitlines()
        finally:
            os.close(fd)
    return sum(_names(v, target) for v in seen) if _names(visit, target) else 0


def fault_point(site: str, number: int | None = None) -> None:
    """Kill the run here when ``BERTLAB_FAULT`` names this visit of ``site`` (see the module docstring).
    ``number``: the visit's own number, where it has one that a rerun keeps (a training step's global step: a
    resumed fit does not pass the steps before its checkpoint again), in place of counting the visits."""
    spec, directory = os.environ.get("BERTLAB_FAULT"), os.environ.get("BERTLAB_FAULT_DIR")
    if not spec and not directory:
        return
    stage = os.environ.get("BERTLAB_STAGE")
    target, _, at = (spec or "").partition(":")
    visit = f"{stage}/{site}" if stage else site
    n = _count(visit, target, directory)
    if number is not None and n:
        n = number
    if at.isdigit() and n == int(at):
        os.killpg(os.getpgid(0), signal.SIGKILL)


@contextlib.contextmanager
def in_stage(name: str) -> Iterator[None]:
    """Name the pipeline stage being run (``BERTLAB_STAGE``), for this process and the ones it starts."""
    before = os.environ.get("BERTLAB_STAGE")
    os.environ["BERTLAB_STAGE"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["BERTLAB_STAGE"]
        else:
            os.environ["BERTLAB_STAGE"] = before
