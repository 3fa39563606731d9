"""The one base every bertlab LightningModule shares: train/val/test all go through ``_shared_step``."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class SharedStepModule(pl.LightningModule):
    """Subclasses implement ``_shared_step(batch, stage)`` with stage in {"train", "val", "test"}.

    A classifier's test stage may return ``test_outputs(...)`` instead of the loss: the predicted and gold
    label of every example, which ``callbacks.test_predictions.TestPredictions`` saves for paired tests.
    """

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._shared_step(batch, "test")

    @staticmethod
    def test_outputs(loss: torch.Tensor, logits: torch.Tensor, batch: dict) -> dict:
        return {"loss": loss, "idx": batch["idx"], "preds": logits.detach().argmax(-1), "labels": batch["labels"]}
