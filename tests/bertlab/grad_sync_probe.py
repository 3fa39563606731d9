"""Callbacks for tests: per rank, whether each backward pass all-reduces (the DDP accumulation test); what is
left of the process group when a worker's process exits (the ddp_spawn test); a run that fails once it starts
(the launcher tests)."""

from __future__ import annotations

import atexit
import json
import os

import pytorch_lightning as pl


class GradSyncProbe(pl.Callback):
    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.syncs: list[bool] = []

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        # DistributedDataParallel.no_sync() clears this flag; the reducer all-reduces only when it is set
        self.syncs.append(bool(trainer.strategy.model.require_backward_grad_sync))

    def on_train_end(self, trainer, pl_module) -> None:
        with open(os.path.join(self.output_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(self.syncs, f)


class ExitProbe(pl.Callback):
    """At its process's exit, each rank writes ``exit_<stage>_rank<r>.json``: whether torch.distributed is
    still initialized, and the names of the process's threads (gloo's are ``gloo_*``, ``pt_gloo_*``)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def setup(self, trainer, pl_module, stage: str) -> None:
        path = os.path.join(self.output_dir, f"exit_{trainer.state.fn.value}_rank{trainer.global_rank}.json")
        atexit.register(_write_exit_state, path)


def _write_exit_state(path: str) -> None:
    import torch.distributed as dist

    tasks = f"/proc/{os.getpid()}/task"
    threads = [open(os.path.join(tasks, t, "comm")).read().strip() for t in os.listdir(tasks)]
    with open(path, "w") as f:
        json.dump({"initialized": dist.is_initialized(), "threads": threads}, f)


class FailAtFitStart(pl.Callback):
    """A run that passes every pre-flight check and then fails: what a launcher must report, not hide."""

    def on_fit_start(self, trainer, pl_module) -> None:
        raise RuntimeError("deliberate failure at fit start")
