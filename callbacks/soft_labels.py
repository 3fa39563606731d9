"""``SoftLabelWriter``: dump a teacher's class probabilities over the training split.

Self-knowledge distillation (Hinton et al. 2015, with the teacher an earlier run of the
same model): fit a teacher, run ``bertlab predict`` with its checkpoint and
``data.predict_split: train`` and this callback, then fit the student with
``data.soft_labels_file`` pointing at the dump (see ``configs/pipelines/self_distill.yaml``).

The file is ``soft_labels.npz``: ``idx`` [N] (example ids, sorted), ``probs`` [N, C]
(float32, T = 1), ``labels`` (class names), ``split`` and ``data_fingerprint`` (of the
texts predicted on, so a student on other data is refused). Under DDP the
``DistributedSampler`` pads by repeating examples, so predictions are gathered on rank 0
and de-duplicated by id: each example is written exactly once. Only rank 0 writes.
"""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from bertlab.core.files import atomic_path
from callbacks.predictions import gather_predictions, wait_for_rank_zero

FILENAME = "soft_labels.npz"


class SoftLabelWriter(BasePredictionWriter):
    def __init__(self, output_path: str | None = None):
        """
        Args:
            output_path: the ``.npz`` to write (default: ``<default_root_dir>/soft_labels.npz``).
        """
        super().__init__(write_interval="epoch")
        self.output_path = output_path
        self.written_to: str | None = None

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions, batch_indices
    ) -> None:
        result = gather_predictions(trainer, predictions)
        if result is not None:
            self._write(trainer, *result)
        wait_for_rank_zero(trainer)

    def _write(self, trainer: pl.Trainer, idx: np.ndarray, probs: np.ndarray) -> None:
        dm = trainer.datamodule
        split = dm.hparams.predict_split
        path = self.output_path or os.path.join(trainer.default_root_dir, FILENAME)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                idx=idx,
                probs=probs,
                labels=np.asarray(dm.label_names, dtype=str),
                split=np.asarray(split),
                data_fingerprint=np.asarray(dm.data_fingerprint("predict")),
            )
        self.written_to = path
