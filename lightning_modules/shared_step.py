"""The one base every bertlab LightningModule shares: train/val/test all go through ``_shared_step``."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class SharedStepModule(pl.LightningModule):
    """Subclasses implement ``_shared_step(batch, stage)`` with stage in {"train", "val", "test"}."""

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")
