"""``TailAveraging``: the equal-weight average of the weights over the last part of training.

Stochastic weight averaging (Izmailov et al. 2018) over the tail of one fine-tuning run: from
``start_fraction`` of the optimizer steps on, every ``every_n_steps``-th step's weights enter a
running mean. Validation, the saved checkpoints and the final model use the average. For a
1-epoch fine-tune this is "averaging the last checkpoints", taken at every step, at no extra
forward or backward cost. Built on Lightning's ``WeightAveraging``.

Until the first update there is no average yet, so validation, checkpoints and the final model
keep the current weights (Lightning's base class would use the initial copy).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import WeightAveraging

from bertlab.core.errors import BertlabError


class TailAveraging(WeightAveraging):
    def __init__(self, start_fraction: float = 0.5, every_n_steps: int = 1):
        """
        Args:
            start_fraction: the share of the training steps after which averaging starts, in [0, 1).
            every_n_steps: add one step's weights in every N.
        """
        if not 0.0 <= float(start_fraction) < 1.0:
            raise BertlabError(f"TailAveraging.start_fraction must be in [0, 1), got {start_fraction}")
        if int(every_n_steps) < 1:
            raise BertlabError(f"TailAveraging.every_n_steps must be >= 1, got {every_n_steps}")
        super().__init__(use_buffers=True)
        self.start_fraction, self.every_n_steps = float(start_fraction), int(every_n_steps)
        self.start_step = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = int(self.start_fraction * trainer.estimated_stepping_batches)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False
        return step_idx >= self.start_step and (step_idx - self.start_step) % self.every_n_steps == 0

    @property
    def averaged(self) -> int:
        """How many steps' weights are in the average."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged.item())

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swapped = self.averaged > 0
        if self._swapped:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(self, "_swapped", False):
            super().on_validation_epoch_end(trainer, pl_module)
        self._swapped = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaged > 0:
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]):
        if self.averaged > 0 or self._average_model is None:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
