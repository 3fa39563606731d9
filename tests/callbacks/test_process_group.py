"""``LeaveProcessGroup`` acts only in ``ddp_spawn``/``ddp_fork`` workers, whose processes end with the run; the
CLI leaves the group itself after a torchrun or ``ddp`` (subprocess) stage. What is left at a worker's exit
is tested end to end in ``tests/bertlab/test_cli.py``."""

import pytest
import pytorch_lightning as pl

from callbacks.process_group import leave_process_group, runs_in_spawned_workers


@pytest.mark.parametrize(
    "strategy, devices, spawned",
    [("ddp_spawn", 2, True), ("ddp_fork", 2, True), ("ddp", 2, False), ("auto", 1, False)],
)
def test_only_spawned_or_forked_workers_leave_at_teardown(strategy, devices, spawned):
    trainer = pl.Trainer(accelerator="cpu", strategy=strategy, devices=devices, logger=False)
    assert runs_in_spawned_workers(trainer) is spawned


def test_leaving_without_a_process_group_does_nothing():
    leave_process_group()  # the CLI calls it after every stage, distributed or not
