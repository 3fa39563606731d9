"""Batches: a dataset over cached token arrays, dynamic padding, and length-grouped sampling."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

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


class LengthGroupedSampler(Sampler[int]):
    """Shuffled order in which neighbours have similar lengths, so padding is small.

    Shuffle, cut into mega-batches of ``mega_batch_mult × batch_size``, sort each by length,
    then shuffle the order of the resulting batches (as HF's ``group_by_length``). The order
    depends only on (seed, epoch); the epoch advances at every ``__iter__``.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, mega_batch_mult: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = max(batch_size * mega_batch_mult, batch_size)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        perm = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(perm), self.mega):
            chunk = perm[start : start + self.mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        order = rng.permutation(len(batches))
        return iter(int(i) for b in order for i in batches[b])
