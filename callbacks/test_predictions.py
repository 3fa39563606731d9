"""``TestPredictions``: save every test example's predicted and gold label beside ``test_metrics.json``.

Two runs tested on the same split can then be compared example by example (the paired McNemar
test of ``bertlab ablate``'s tables). The file is ``test_predictions.npz``: ``idx`` [N] (example
ids, sorted), ``preds`` and ``labels`` [N] (class ids). Under DDP the ``DistributedSampler`` pads
by repeating examples, so rows are gathered on rank 0 and de-duplicated by id; only rank 0 writes.
A module whose ``test_step`` returns no ``preds`` (an MLM stage) writes nothing.
"""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from bertlab.core.files import atomic_path
from callbacks.predictions import gather_by_id, wait_for_rank_zero

FILENAME = "test_predictions.npz"


class TestPredictions(Callback):
    __test__ = False  # not a pytest class

    def __init__(self, output_path: str | None = None):
        """
        Args:
            output_path: the ``.npz`` to write (default: ``<default_root_dir>/test_predictions.npz``).
        """
        self.output_path = output_path
        self.written_to: str | None = None
        self._rows: list[np.ndarray] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict) and "preds" in outputs and dataloader_idx == 0:
            cols = [outputs["idx"], outputs["preds"], outputs["labels"]]
            self._rows.append(torch.stack([c.long().cpu() for c in cols], dim=1).numpy())

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 3), dtype=np.int64)
        gathered = gather_by_id(trainer, rows[:, 0], rows[:, 1], rows[:, 2])
        if gathered is not None and len(gathered[0]):
            idx, preds, labels = gathered
            path = self.output_path or os.path.join(trainer.default_root_dir, FILENAME)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, idx=idx, preds=preds, labels=labels)
            self.written_to = path
        wait_for_rank_zero(trainer)
        self._rows = []


def load_test_predictions(run_dir: str) -> dict[str, np.ndarray] | None:
    """``{idx, preds, labels}`` saved by a run's test stage, or None when the run saved none."""
    path = os.path.join(run_dir, FILENAME)
    if not os.path.isfile(path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in ("idx", "preds", "labels")}
