"""``PredictionCSV``: write predictions as CSV — input text, predicted label, one probability column per class.

Under DDP the ``DistributedSampler`` pads the last batch by repeating examples, so rows are
gathered on rank 0 and de-duplicated by example id: each input appears exactly once, in input order.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from bertlab.core.faults import fault_point
from bertlab.core.files import atomic_path


def gather_by_id(trainer: pl.Trainer, idx: np.ndarray, *columns: np.ndarray | None) -> tuple | None:
    """Every rank's rows on rank 0, one per example id in id order (``idx`` sorted, the first row of each id:
    the ``DistributedSampler`` pads by repeating examples), as ``(idx, *columns)``; None on the other ranks.
    A rank with no rows may hand ``None`` for a column."""
    if trainer.world_size > 1:
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, (idx, *columns))
        idx = np.concatenate([g[0] for g in gathered])
        columns = tuple(
            np.concatenate([g[k] for g in gathered if g[k] is not None]) for k in range(1, len(columns) + 1)
        )
    if not trainer.is_global_zero:
        return None
    ids, first = np.unique(idx, return_index=True)  # sorted ids, first occurrence of each
    return (ids.astype(np.int64), *(c[first] for c in columns))


def gather_predictions(trainer: pl.Trainer, predictions) -> tuple[np.ndarray, np.ndarray] | None:
    """(idx, probs) of every rank's ``predict_step`` outputs on rank 0, one row per id in id order; None elsewhere."""
    preds = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
    idx = torch.cat([p["idx"] for p in preds]).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)
    probs = torch.cat([p["probs"] for p in preds]).float().cpu().numpy() if preds else None
    gathered = gather_by_id(trainer, idx, probs)
    return None if gathered is None else (gathered[0], gathered[1].astype(np.float32))


def wait_for_rank_zero(trainer: pl.Trainer) -> None:
    """Hold every rank until rank 0 has written what it gathered.

    A rank that left while rank 0 still wrote aborted at exit ("terminate called without an active
    exception") in about one ``ddp_spawn`` predict in three here.
    """
    if trainer.world_size > 1:
        trainer.strategy.barrier("gathered_and_written")


def prediction_frame(frame: pd.DataFrame, names: list[str], probs: np.ndarray) -> pd.DataFrame:
    """The rows written: ``frame``'s columns (the text, ...), ``predicted_label``, then ``prob_<label>`` per class."""
    out = frame.reset_index(drop=True).copy()
    out.insert(len(out.columns), "predicted_label", [names[i] for i in probs.argmax(1)])
    for j, name in enumerate(names):
        out[f"prob_{name}"] = probs[:, j]
    return out


class PredictionCSV(BasePredictionWriter):
    def __init__(self, output_path: str | None = None):
        """
        Args:
            output_path: CSV to write (default: ``<default_root_dir>/predictions.csv``).
        """
        super().__init__(write_interval="epoch")
        self.output_path = output_path
        self.written_to: str | None = None

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions, batch_indices
    ) -> None:
        gathered = gather_predictions(trainer, predictions)
        if gathered is not None:
            self._write(trainer, *gathered)
        wait_for_rank_zero(trainer)

    def _write(self, trainer: pl.Trainer, idx: np.ndarray, probs: np.ndarray) -> None:
        dm = trainer.datamodule
        out = prediction_frame(dm.texts("predict").iloc[idx], dm.label_names, probs)
        path = self.output_path or os.path.join(trainer.default_root_dir, "predictions.csv")
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False)
            fault_point("predictions")
        self.written_to = path
