"""``GracefulStop``: SIGTERM or SIGINT during fit finishes the current step, saves a resumable checkpoint and stops.

Lightning already turns SIGTERM into a ``SIGTERMException`` at the next step's end (and keeps SLURM's
SIGUSR1 requeue); this callback treats SIGINT (Ctrl-C) the same way instead of a ``KeyboardInterrupt`` in the
middle of a step, and on the way out saves ``<checkpoint dir>/interrupted-step=N.ckpt``. The exception
carries ``bertlab_resume = (signum, path)`` so that the CLI can print one line saying how to resume and exit
with 128 + signum. A second Ctrl-C stops at once, without a checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from bertlab.core.faults import fault_point


def checkpoint_dir(trainer: pl.Trainer) -> str:
    callback = trainer.checkpoint_callback
    dirpath = getattr(callback, "dirpath", None)
    return dirpath or os.path.join(trainer.default_root_dir, "checkpoints")


class GracefulStop(pl.Callback):
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def _install(self, trainer: pl.Trainer) -> None:
        # after Lightning's own handlers (registered once the fit has started), which ours call
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._make_handler(trainer))

    def _make_handler(self, trainer: pl.Trainer):
        def handler(signum, frame):
            previous = self._previous.get(signum)
            if signum == signal.SIGINT and self.signum == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            if signum == signal.SIGTERM and callable(previous):
                previous(signum, frame)  # Lightning's: tells the other ranks, keeps SLURM's bypass
            self.signum = self.signum or signum
            trainer._signal_connector.received_sigterm = True  # the loops stop at the end of this step

        return handler

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        fault_point("train_step", trainer.global_step)  # the crash tests' SIGKILL between steps (bertlab.core.faults)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        signum = self.signum or signal.SIGTERM
        path = os.path.join(checkpoint_dir(trainer), f"interrupted-step={trainer.global_step}.ckpt")
        trainer.save_checkpoint(path)
        exception.bertlab_resume = (int(signum), os.path.abspath(path))
