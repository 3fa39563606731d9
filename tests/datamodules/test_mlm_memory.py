"""``MLMDataModule`` memory: the texts are dropped once their tokens are cached, per-token scores stay one
flat array, and none of it changes a batch (the batch contents and the sampler order are pinned)."""

import hashlib

import numpy as np

from datamodules.batching import Loader
from datamodules.mlm import MLMDataModule
from datamodules.samplers import LengthGroupedEpochSampler, LengthGroupedSampler
from tests.conftest import make_texts

# digests of the batches below, taken before the memory changes (main at 041c3ab)
PINNED_BATCHES = "5aa823ba6ecb1c95"
PINNED_ORDER = [79, 11, 28, 62, 45, 96, 27, 44, 88, 37, 87, 70, 26, 77, 9, 43]


def _dm(tiny_bert_dir, tmp_path) -> MLMDataModule:
    texts, _ = make_texts(300, seed=11)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return MLMDataModule(
        tokenizer=tiny_bert_dir,
        corpus=[str(corpus)],
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.1,
        seed=3,
        loader=Loader(batch_size=8),
    )


def _digest(dm: MLMDataModule) -> str:
    h = hashlib.sha256()
    batches = [b for _, b in zip(range(6), dm.train_dataloader())] + list(dm.val_dataloader())
    for batch in batches:
        for key in sorted(batch):
            h.update(key.encode())
            h.update(batch[key].numpy().tobytes())
    return h.hexdigest()[:16]


def test_batches_are_unchanged_and_the_texts_are_released(tiny_bert_dir, tmp_path):
    dm = _dm(tiny_bert_dir, tmp_path)
    dm.prepare_data()
    assert "documents" not in dm.__dict__  # released once the tokens are cached ...
    dm.setup("fit")
    assert "documents" not in dm.__dict__  # ... and setup needs only the cache keys
    assert _digest(dm) == PINNED_BATCHES
    again = _dm(tiny_bert_dir, tmp_path)  # a second run on the same cache: same batches, texts never kept
    again.setup("fit")
    assert "documents" not in again.__dict__ and _digest(again) == PINNED_BATCHES
    assert len(dm.documents["train"]) == len(dm.datasets["train"])  # still there on demand (read again)


def test_length_grouped_order_is_pinned():
    lengths = np.arange(100) % 17 + 1
    assert list(LengthGroupedSampler(lengths, 4, seed=5))[:16] == PINNED_ORDER

    class Masker:
        def set_epoch(self, epoch):
            pass

    assert list(LengthGroupedEpochSampler(lengths, 4, Masker(), seed=5))[:16] == PINNED_ORDER
