"""Batches: a dataset over cached token arrays, dynamic padding, and the ``Loader`` settings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.token_cache import TokenArrays


class TokenizedDataset(Dataset):
    """Examples from cached token arrays, with their stable id (``idx``) and any per-example extras.

    ``extras`` maps a name (``labels``, ``soft_labels``, ``knowledge``, ...) to an array whose
    first axis is the example; each item carries row ``i`` of every extra.
    """

    def __init__(self, arrays: TokenArrays, idx: np.ndarray, extras: dict[str, np.ndarray] | None = None):
        self.arrays = arrays
        self.idx = np.asarray(idx, dtype=np.int64)
        self.extras = extras or {}

    def __len__(self) -> int:
        return len(self.arrays)

    def lengths(self) -> np.ndarray:
        return self.arrays.lengths()

    def __getitem__(self, i: int) -> dict:
        item = self.arrays.get(i)
        item["idx"] = int(self.idx[i])
        for name, values in self.extras.items():
            item[name] = values[i]
        return item


class PadCollator:
    """Pads to the longest sequence in the batch (optionally to a multiple of N) and builds the attention mask."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = np.full((len(features), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(features), width), dtype=np.int64)
        has_types = "token_type_ids" in features[0]
        types = np.zeros((len(features), width), dtype=np.int64) if has_types else None
        for row, (f, n) in enumerate(zip(features, lengths)):
            ids[row, :n] = f["input_ids"]
            mask[row, :n] = 1
            if has_types:
                types[row, :n] = f["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if has_types:
            batch["token_type_ids"] = torch.from_numpy(types)
        for key in features[0]:
            if key not in ("input_ids", "token_type_ids"):
                batch[key] = torch.as_tensor(np.stack([np.asarray(f[key]) for f in features]))
        return batch


@dataclass
class Loader:
    """How batches are drawn.

    Args:
        batch_size: training examples per batch.
        eval_batch_size: examples per validation/test/predict batch (default: ``batch_size``).
        group_by_length: batch training examples of similar length (less padding).
        pad_to_multiple_of: pad every batch to a multiple of this many tokens (tensor cores like 8).
        num_workers: DataLoader worker processes.
    """

    batch_size: int = 32
    eval_batch_size: int | None = None
    group_by_length: bool = True
    pad_to_multiple_of: int | None = None
    num_workers: int = 0

    @property
    def eval_size(self) -> int:
        return self.eval_batch_size or self.batch_size
