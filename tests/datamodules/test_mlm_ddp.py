"""MLM under DDP: the corpus is tokenized once for all ranks, and each rank trains on its own part
(``samplers.RankSampler``: ``DistributedSampler``'s split, exact on resume)."""

import os

import numpy as np
import pytorch_lightning as pl

from callbacks.process_group import LeaveProcessGroup
from datamodules import corpus_build
from datamodules.batching import Loader
from datamodules.mlm import MLMDataModule
from datamodules.mlm_dataset import MLMDataset
from datamodules.samplers import LengthGroupedSampler, RankSampler
from lightning_modules.masked_lm import MaskedLM
from tests.conftest import make_texts


def test_rank_parts_are_distributed_samplers_split_and_resume_exactly():
    lengths = np.arange(103) % 11 + 1
    order = list(LengthGroupedSampler(lengths, 4, seed=2))
    parts = [list(RankSampler(LengthGroupedSampler(lengths, 4, seed=2), 3, r)) for r in range(3)]
    padded = order + order[:2]  # 103 -> 105: padded with the pass's first examples, as DistributedSampler pads
    assert parts == [padded[r::3] for r in range(3)] and all(len(p) == 35 for p in parts)
    resumed = RankSampler(LengthGroupedSampler(lengths, 4, seed=2), 3, 1)
    resumed.resume_at = 12  # 3 batches of 4 already drawn by rank 1
    assert list(resumed) == parts[1][12:] and len(list(resumed)) == 35  # skips once; the next pass is whole


def test_two_ddp_ranks_tokenize_once_and_draw_disjoint_batches(tiny_bert_dir, tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_texts(120, seed=31)[0]) + "\n", encoding="utf-8")
    drawn, built = tmp_path / "drawn", tmp_path / "built"
    drawn.mkdir()
    build, getitem = corpus_build.build, MLMDataset.__getitem__

    def counted_build(*args, **kwargs):
        with open(built, "a") as f:
            f.write(f"{os.getpid()}\n")
        return build(*args, **kwargs)

    def logged_getitem(self, i):
        with open(drawn / str(os.getpid()), "a") as f:
            f.write(f"{i}\n")
        return getitem(self, i)

    monkeypatch.setattr(corpus_build, "build", counted_build)  # ddp_fork: the ranks inherit both
    monkeypatch.setattr(MLMDataset, "__getitem__", logged_getitem)
    dm = MLMDataModule(
        tokenizer=tiny_bert_dir,
        corpus=[str(corpus)],
        cache_dir=str(tmp_path / "cache"),
        max_length=32,
        val_fraction=0.1,
        loader=Loader(batch_size=8),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        strategy="ddp_fork",
        devices=2,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LeaveProcessGroup()],
    )
    trainer.fit(MaskedLM(model_name_or_path=tiny_bert_dir), datamodule=dm)
    assert len(built.read_text().split()) == 1  # one rank tokenized; the other opened its cache
    parts = [[int(i) for i in (drawn / pid).read_text().split()] for pid in sorted(os.listdir(drawn))]
    n = len(set(make_texts(120, seed=31)[0])) - round(0.1 * len(set(make_texts(120, seed=31)[0])))
    assert len(parts) == 2 and [len(p) for p in parts] == [(n + 1) // 2] * 2
    assert set(parts[0]) | set(parts[1]) == set(range(n))
    assert len(set(parts[0]) & set(parts[1])) == n % 2  # disjoint, but for DistributedSampler's padding
