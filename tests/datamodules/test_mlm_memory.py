"""``MLMDataModule`` memory: the corpus is streamed into the token cache and never read again once cached, and
the batches stay as pinned (the batch contents and the sampler order)."""

import hashlib

import numpy as np

from datamodules import corpus, corpus_build, sources
from datamodules.batching import Loader
from datamodules.mlm import MLMDataModule
from datamodules.samplers import LengthGroupedEpochSampler, LengthGroupedSampler
from tests.conftest import make_texts

# digests of the batches below: re-pinned when the corpus became a stream (documents in stream order, the
# validation cut by content hash) — main at 041c3ab gave 5aa823ba6ecb1c95 from a permuted document list
PINNED_BATCHES = "56ff3f7a3f3bc0f0"
PINNED_ORDER = [79, 11, 28, 62, 45, 96, 27, 44, 88, 37, 87, 70, 26, 77, 9, 43]


def _dm(tiny_bert_dir, tmp_path) -> MLMDataModule:
    texts, _ = make_texts(300, seed=11)
    corpus = tmp_path / "c.txt"
    if not corpus.exists():  # written once: a rewrite is a new mtime, and the file would be hashed again
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


def test_batches_are_pinned_and_a_warm_cache_reads_no_text(tiny_bert_dir, tmp_path, monkeypatch):
    dm = _dm(tiny_bert_dir, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert _digest(dm) == PINNED_BATCHES

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus text was read again")

    monkeypatch.setattr(corpus, "read_range", no_reading)
    monkeypatch.setattr(corpus_build, "read_range", no_reading)
    monkeypatch.setattr(sources, "check_utf8", no_reading)
    again = _dm(tiny_bert_dir, tmp_path)  # a second run (or another rank) on the same cache
    again.setup("fit")
    assert again.built_now == {"train": False, "val": False} and _digest(again) == PINNED_BATCHES
    monkeypatch.undo()
    assert len(dm.documents["train"]) == len(dm.datasets["train"])  # still there on demand (read again)


def test_length_grouped_order_is_pinned():
    lengths = np.arange(100) % 17 + 1
    assert list(LengthGroupedSampler(lengths, 4, seed=5))[:16] == PINNED_ORDER

    class Masker:
        def set_epoch(self, epoch):
            pass

    assert list(LengthGroupedEpochSampler(lengths, 4, Masker(), seed=5))[:16] == PINNED_ORDER
