"""A callback for the DDP accumulation test: records, per rank, whether each backward pass all-reduces."""

from __future__ import annotations

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
