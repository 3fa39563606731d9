"""Leaving the process group together before a rank's process exits.

Neither torchrun ranks nor Lightning's ``ddp_spawn`` workers destroy the gloo process group on the way
out. A rank whose interpreter shut down with gloo's threads still alive aborted now and then ("terminate
called without an active exception", SIGABRT), which turns a finished run into a failed one. It was seen
under torchrun, and under ``ddp_spawn`` predict: in about one run in three while a rank could leave before
rank 0 had written, and once in a full CI test run after the writers' barrier had closed that window.

``leave_process_group`` is what every such rank calls last: a barrier, so that no rank tears down a
connection that another still uses, then ``destroy_process_group``, which stops gloo's threads while the
interpreter is whole. The CLI calls it after a torchrun stage; ``LeaveProcessGroup`` calls it at the end
of the run inside each spawned or forked worker, whose process ends there."""

from __future__ import annotations

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher


def leave_process_group() -> None:
    """Barrier, then destroy the default process group; nothing when there is none."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def runs_in_spawned_workers(trainer: pl.Trainer) -> bool:
    """Whether the run is in ``ddp_spawn``/``ddp_fork`` workers, processes that end with the run."""
    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


class LeaveProcessGroup(pl.Callback):
    """In a spawned or forked DDP worker, leave the process group once the run has torn down.

    ``teardown`` is the last hook of a run; after it the worker only hands its results to the parent
    process, with no collective. A run that raised never gets here: it fails anyway.
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if runs_in_spawned_workers(trainer):
            leave_process_group()
