"""Fault points: ``BERTLAB_FAULT`` kills on the visit it names, counted over the whole run or inside one stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.bertlab.cli_helpers import ROOT

# two stages, each visiting train_step three times and export once; prints each visit before making it
RUN = """
from bertlab.core.faults import fault_point, in_stage
for stage in ("mlm", "finetune"):
    with in_stage(stage):
        for site in ("train_step",) * 3 + ("export",):
            print(stage, site, flush=True)
            fault_point(site)
"""


def _run(fault: str, visits: str | None = None) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTLAB_")} | {"BERTLAB_FAULT": fault}
    env |= {"PYTHONPATH": ROOT} | ({"BERTLAB_FAULT_DIR": visits} if visits else {})
    # a session of its own: the fault kills its process group, which must not be pytest's
    proc = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, start_new_session=True)
    return proc.returncode, proc.stdout.splitlines()


@pytest.mark.parametrize("with_dir", [False, True])
@pytest.mark.parametrize(
    "fault, last_visit",
    [
        ("train_step:2", "mlm train_step"),  # over the whole run
        ("train_step:5", "finetune train_step"),  # the second of finetune's
        ("finetune/train_step:2", "finetune train_step"),  # inside one stage: the same visit
        ("finetune/export:1", "finetune export"),
        ("mlm/export:1", "mlm export"),
    ],
)
def test_the_named_visit_kills_the_run(tmp_path, fault, last_visit, with_dir):
    code, visits = _run(fault, str(tmp_path / "visits") if with_dir else None)
    assert code == -signal.SIGKILL
    expected = {"train_step:2": 2, "train_step:5": 6, "finetune/train_step:2": 6, "finetune/export:1": 8}
    assert visits[-1] == last_visit and len(visits) == expected.get(fault, 4)


@pytest.mark.parametrize("fault", ["train_step:7", "predict/train_step:1", "mlm/train_step:4", "export:x"])
def test_a_visit_that_never_comes_kills_nothing(fault):
    assert _run(fault) == (0, [f"{s} {v}" for s in ("mlm", "finetune") for v in ("train_step",) * 3 + ("export",)])


def test_the_visits_are_recorded_by_stage(tmp_path):
    code, _ = _run("", str(tmp_path / "visits"))
    assert code == 0
    with open(tmp_path / "visits" / "visits") as f:
        assert f.read().split() == [f"{s}/{v}" for s in ("mlm", "finetune") for v in ("train_step",) * 3 + ("export",)]


def test_a_numbered_visit_is_named_by_its_number_not_by_counting():
    """A resumed fit starts at its checkpoint's step: its first training step is global step 5, and
    ``train_step:5`` must name it, while ``train_step:1`` (a step it never passes again) names nothing."""
    run = (
        "from bertlab.core.faults import fault_point\n"
        "for step in (5, 6):\n"
        "    print(step, flush=True)\n"
        "    fault_point('train_step', step)\n"
    )
    for fault, expected in [("train_step:5", (-signal.SIGKILL, ["5"])), ("train_step:1", (0, ["5", "6"]))]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTLAB_")} | {"BERTLAB_FAULT": fault}
        proc = subprocess.run(
            [sys.executable, "-c", run],
            env=env | {"PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
            start_new_session=True,
        )
        assert (proc.returncode, proc.stdout.splitlines()) == expected
