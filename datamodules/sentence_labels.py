"""Model_b's data, stored and batched: ``SentenceLabels`` (one split's sentences, flat, with the buffer-rule label
of each token), the ``.npz`` file ``TokenLabelDataModule`` caches them in (``save``, ``load``), and the dataset
and collator that feed them to Model_b (``TaggedSentences``, ``TagCollator``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from bertlab.core.files import atomic_path

UNLABELLED = -1  # specials, and the sentences Model_0 misclassifies
FIELDS = ("ids", "offsets", "labels", "doc")


@dataclass
class SentenceLabels:
    """One split's sentences, flat: token ids with specials (``offsets`` delimit sentence i), the raw
    buffer-rule label per token (1 / 0, ``UNLABELLED`` at specials and in misclassified sentences) and
    the index of the document each sentence came from."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    doc: np.ndarray

    def __len__(self) -> int:
        return len(self.doc)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[lo:hi], self.labels[lo:hi]

    @property
    def correct(self) -> np.ndarray:
        """Per sentence: did Model_0 classify it correctly (so that it has buffer-rule labels)?"""
        if not len(self):
            return np.zeros(0, dtype=bool)
        return np.add.reduceat((self.labels != UNLABELLED).astype(np.int64), self.offsets[:-1]) > 0


def save(path: str, labels: dict[str, SentenceLabels], summary: dict) -> None:
    """The splits' labels as one ``.npz`` at ``path`` and ``summary`` beside it (``.json``), each written atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **{f"{s}_{k}": getattr(sl, k) for s, sl in labels.items() for k in FIELDS})
    with atomic_path(path[: -len(".npz")] + ".json") as tmp, open(tmp, "w") as f:
        json.dump(summary, f, indent=1)


def load(path: str, splits: tuple[str, ...] = ("train", "val")) -> dict[str, SentenceLabels]:
    with np.load(path) as f:
        return {s: SentenceLabels(*(f[f"{s}_{k}"] for k in FIELDS)) for s in splits}


class TaggedSentences(Dataset):
    """Model_b's examples: the sentences ``rows`` of ``sentences`` with their per-token targets (``flat_targets``,
    aligned with ``sentences.ids``; below 0: no loss)."""

    def __init__(self, sentences: SentenceLabels, flat_targets: np.ndarray, rows: list[int]):
        self.sentences, self.flat, self.rows = sentences, flat_targets, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, n: int) -> dict:
        i = self.rows[n]
        lo, hi = int(self.sentences.offsets[i]), int(self.sentences.offsets[i + 1])
        labels = self.flat[lo:hi].astype(np.int64)
        return {
            "input_ids": self.sentences.ids[lo:hi].astype(np.int64),
            "labels": np.where(labels < 0, -100, labels),
            "idx": i,
        }


class TagCollator:
    """Pads a batch of ``TaggedSentences`` examples: ids with the pad id, targets with -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for r, f in enumerate(features):
            ids[r, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"])
            labels[r, : len(f["labels"])] = torch.as_tensor(f["labels"])
        return {
            "input_ids": ids,
            "attention_mask": (
                torch.arange(width) < torch.tensor([len(f["input_ids"]) for f in features])[:, None]
            ).long(),
            "labels": labels,
            "idx": torch.tensor([f["idx"] for f in features]),
        }
