"""A child started with ``child_env`` and ``held_locks`` dies with its parent, and holds the parent's directory
lock until it has; one started without them outlives the parent and leaves the directory unlocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.bertlab.cli_helpers import ROOT
from tests.bertlab.run_locks import locked, until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from bertlab.core.files import exclusive_dir, held_locks
    from bertlab.core.lifetime import child_env

    run, tied = sys.argv[1], sys.argv[2] == "tied"
    child = "from bertlab.core.lifetime import tie_to_starter; tie_to_starter(); import time; time.sleep(60)"
    with exclusive_dir(run):
        env = child_env(dict(os.environ)) if tied else dict(os.environ)
        kid = subprocess.Popen([sys.executable, "-c", child], env=env, pass_fds=held_locks() if tied else ())
        print(kid.pid, flush=True)
        time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has already let go of everything
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("tied", [True, False])
def test_a_child_dies_with_its_parent_only_when_tied(tmp_path, tied):
    run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, run, "tied" if tied else "free"], env=env, stdout=subprocess.PIPE, text=True
    )
    kid = int(parent.stdout.readline())
    try:
        assert locked(run)
        parent.kill()
        assert parent.wait(timeout=10) == -signal.SIGKILL
        if tied:
            assert until(lambda: not _alive(kid)), "the tied child outlived its parent"
            assert not locked(run)
        else:  # what happened before: the child runs on, in a directory nobody locks
            time.sleep(1)
            assert _alive(kid) and not locked(run)
    finally:
        if _alive(kid):
            os.kill(kid, signal.SIGKILL)


def test_the_lock_stays_held_while_a_child_that_shares_it_lives(tmp_path):
    """The parent dies, the child holding the inherited descriptor has not (yet): the directory is still locked."""
    run = str(tmp_path / "run")
    script = PARENT.replace("tie_to_starter(); ", "")  # a child that does not die with its parent
    env = dict(os.environ, PYTHONPATH=ROOT)
    parent = subprocess.Popen([sys.executable, "-c", script, run, "tied"], env=env, stdout=subprocess.PIPE, text=True)
    kid = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait(timeout=10)
        assert locked(run)
        os.kill(kid, signal.SIGKILL)
        assert until(lambda: not locked(run))
    finally:
        if _alive(kid):
            os.kill(kid, signal.SIGKILL)
