"""``MLMDataModule`` on the tiny tokenizer: corpus reading, task texts, packing, splits, cache, masks."""

import functools

import numpy as np
import pandas as pd
import pytest
import torch

from bertlab.core.errors import BertlabError
from bertlab.core.models import load_tokenizer
from datamodules.batching import Loader
from datamodules.maskers import EntropyMasker, SelectiveMasker, StaticMasker
from datamodules.mlm import MLMDataModule
from datamodules.splits import Splits
from datamodules.token_cache import TokenArrays
from tests.conftest import make_texts


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    return load_tokenizer(tiny_bert_dir)


def _corpus(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _mlm(tiny_bert_dir, tmp_path, **kwargs) -> MLMDataModule:
    return MLMDataModule(tokenizer=tiny_bert_dir, cache_dir=str(tmp_path / "cache"), **kwargs)


def _all_docs(dm) -> list[str]:
    return dm.documents["train"] + dm.documents["val"]


def _items(ds) -> list[list[int]]:
    return [ds[i]["input_ids"].tolist() for i in range(len(ds))]


def _csv_texts(path) -> list[str]:
    return pd.read_csv(path)["text"].tolist()


# ------------------------------------------------------------ packing and cutting


def test_packed_keeps_every_token_in_full_blocks(tiny_bert_dir, tok, tmp_path):
    texts, _ = make_texts(60, seed=7)
    dm = _mlm(
        tiny_bert_dir,
        tmp_path,
        corpus=[_corpus(tmp_path / "c.txt", texts)],
        mode="packed",
        max_length=16,
        val_fraction=0,
    )
    dm.setup()
    docs = dm.documents["train"]
    assert sorted(docs) == sorted(dict.fromkeys(texts)) and dm.documents["val"] == []
    doc_tokens = tok(docs, add_special_tokens=False)["input_ids"]
    n_tokens = sum(map(len, doc_tokens))
    boundaries = set(
        np.cumsum([len(t) for t in doc_tokens])[:-1].tolist()
    )  # text-token positions where a document ends
    cls, sep = tok.cls_token_id, tok.sep_token_id

    blocks = _items(dm.datasets["train"])
    text, inner_seps, block_starts, block_ends, pos = [], [], set(), [], 0
    for block in blocks:
        assert block[0] == cls and block[-1] == sep and block[-2] != sep  # never [SEP] [SEP]
        block_starts.add(pos)
        for t in block[1:-1]:
            if t == sep:
                inner_seps.append(pos)
            else:
                text.append(t)
                pos += 1
        block_ends.append(pos)
    # every text token kept, in document order, with nothing but [SEP]s between documents
    assert text == [t for doc in doc_tokens for t in doc] and len(text) == n_tokens
    assert len(set(inner_seps)) == len(inner_seps) and set(inner_seps) <= boundaries
    # each document boundary is marked: by a [SEP] inside a block or by the start of the next block
    assert set(inner_seps) | (block_starts & boundaries) == boundaries
    # full blocks; one slot short only where a document ends in the block's last slot (its [SEP] is the block's own)
    for block, end in zip(blocks[:-1], block_ends[:-1]):
        assert len(block) == 16 or (len(block) == 15 and end in boundaries), (
            len(block),
            tok.convert_ids_to_tokens(block),
        )
    assert sum(len(b) == 16 for b in blocks) >= 0.8 * len(blocks)  # mostly full: a short one ends a document
    assert 3 <= len(blocks[-1]) <= 16 and block_ends[-1] == n_tokens


def test_line_by_line_cuts_a_very_long_line(tiny_bert_dir, tok, tmp_path):
    long_line = " ".join(["coffee", "tea", "great", "box"] * 2500)  # 10,000 words
    short = "the tea was lovely"
    dm = _mlm(
        tiny_bert_dir,
        tmp_path,
        corpus=[_corpus(tmp_path / "c.txt", [long_line, short])],
        mode="line_by_line",
        max_length=24,
        val_fraction=0,
    )
    dm.setup()
    items = {len(ids): ids for ids in _items(dm.datasets["train"])}
    assert sorted(items) == [6, 24]
    assert items[24] == [tok.cls_token_id] + tok(long_line, add_special_tokens=False)["input_ids"][:22] + [
        tok.sep_token_id
    ]
    assert items[6] == tok(short)["input_ids"]


# ------------------------------------------------------------ which documents


def test_documents_are_deduplicated_across_lines_and_entries(tiny_bert_dir, tmp_path):
    texts, _ = make_texts(40, seed=3)
    a = _corpus(tmp_path / "a.txt", texts + texts[:10] + ["   " + texts[0] + "  ", ""])
    b = _corpus(tmp_path / "b.txt", texts[5:15] + ["a new review of tea"])
    dm = _mlm(tiny_bert_dir, tmp_path, corpus=[a, b], val_fraction=0.25)
    docs = _all_docs(dm)
    assert len(docs) == len(set(docs)) == len(set(texts)) + 1
    assert set(docs) == set(texts) | {"a new review of tea"}


def test_task_adds_only_its_train_texts(tiny_bert_dir, tiny_csvs, tmp_path):
    train, val, test = (set(_csv_texts(tiny_csvs[s])) for s in ("train", "val", "test"))
    task = Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"], test_file=tiny_csvs["test"])
    dm = _mlm(tiny_bert_dir, tmp_path, task=task, val_fraction=0.1)
    docs = set(_all_docs(dm))
    assert docs == train - val - test and len(docs) > 100
    assert not docs & val and not docs & test


def test_task_without_train_texts_still_removes_val_and_test(tiny_bert_dir, tiny_csvs, tmp_path):
    train, val, test = (_csv_texts(tiny_csvs[s]) for s in ("train", "val", "test"))
    extra = [t for t in make_texts(30, seed=99)[0] if t not in set(train) | set(val) | set(test)]
    corpus = _corpus(tmp_path / "c.txt", extra + val[:5] + test[:5])
    task = Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"], test_file=tiny_csvs["test"])
    dm = _mlm(tiny_bert_dir, tmp_path, corpus=[corpus], task=task, task_train_texts=False, val_fraction=0.1)
    assert set(_all_docs(dm)) == set(extra) and len(extra) >= 20


def test_val_fraction_split_is_deterministic_and_disjoint(tiny_bert_dir, tmp_path):
    texts, _ = make_texts(100, seed=4)
    corpus = [_corpus(tmp_path / "c.txt", texts)]
    n = len(set(texts))
    first, again, other = (
        _mlm(tiny_bert_dir, tmp_path, corpus=corpus, val_fraction=0.2, seed=s).documents for s in (0, 0, 1)
    )
    assert first == again
    assert len(first["val"]) == round(0.2 * n) and len(first["train"]) == n - round(0.2 * n)
    assert not set(first["train"]) & set(first["val"])
    assert set(first["train"]) | set(first["val"]) == set(texts)
    assert set(other["val"]) != set(first["val"])


def test_token_cache_is_reused(tiny_bert_dir, tmp_path):
    corpus = [_corpus(tmp_path / "c.txt", make_texts(50, seed=5)[0])]
    first = _mlm(tiny_bert_dir, tmp_path, corpus=corpus, val_fraction=0.2)
    first.setup()
    second = _mlm(tiny_bert_dir, tmp_path, corpus=corpus, val_fraction=0.2)
    second.setup()
    assert first.built_now == {"train": True, "val": True}
    assert second.built_now == {"train": False, "val": False}
    for split in ("train", "val"):
        assert _items(second.datasets[split]) == _items(first.datasets[split])
    # another max_length is another cache entry
    third = _mlm(tiny_bert_dir, tmp_path, corpus=corpus, val_fraction=0.2, max_length=8)
    third.setup()
    assert third.built_now == {"train": True, "val": True}


def test_table_column_entries(tiny_bert_dir, tmp_path):
    reviews = ["lovely tea", "stale cookies", "the box arrived broken"]
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": reviews + [""], "stars": [5, 1, 2, 3]}).to_csv(path, index=False)
    dm = _mlm(tiny_bert_dir, tmp_path, corpus=[f"{path}:review"], val_fraction=0)
    assert sorted(dm.documents["train"]) == sorted(reviews)
    bad = _mlm(tiny_bert_dir, tmp_path, corpus=[f"{path}:body"], val_fraction=0)
    with pytest.raises(BertlabError) as err:
        _ = bad.documents
    assert str(err.value) == f"{path}: no column 'body'; the columns are 'review', 'stars'"


def test_bad_corpus_entries(tiny_bert_dir, tmp_path):
    with pytest.raises(
        BertlabError,
        match=r"corpus entry 'no_such_corpus' is neither a file nor a built-in corpus \(fine_food, .*fine_food_reviews",
    ):
        _ = _mlm(tiny_bert_dir, tmp_path, corpus=["no_such_corpus"]).documents
    with pytest.raises(BertlabError, match=r"the MLM corpus is empty: give `corpus` entries and/or a `task`"):
        _mlm(tiny_bert_dir, tmp_path, corpus=[])
    blank = _corpus(tmp_path / "blank.txt", ["", "   ", "\t"])
    with pytest.raises(BertlabError, match="the MLM corpus is empty after reading"):
        _ = _mlm(tiny_bert_dir, tmp_path, corpus=[blank]).documents


# ------------------------------------------------------------ options


def test_chinese_whole_word_needs_line_by_line_and_gives_word_ids(tiny_bert_dir, tmp_path):
    corpus = [_corpus(tmp_path / "zh.txt", ["我爱北京天安门"])]
    with pytest.raises(BertlabError, match="chinese_whole_word needs mode: line_by_line"):
        _mlm(tiny_bert_dir, tmp_path, corpus=corpus, mode="packed", chinese_whole_word=True)
    # the tiny English vocabulary makes every character [UNK]: the coverage check is told to let it pass
    dm = _mlm(tiny_bert_dir, tmp_path, corpus=corpus, chinese_whole_word=True, val_fraction=0, max_unk_fraction=1)
    dm.setup()
    item = dm.datasets["train"][0]
    assert len(item["input_ids"]) == 9  # [CLS] + one piece per character + [SEP]
    assert item["word_ids"].tolist() == [-1, 0, 1, 2, 2, 3, 3, 3, -1]  # 我 / 爱 / 北京 / 天安门
    assert "token_type_ids" not in item


def test_selective_masker_needs_a_scorer(tiny_bert_dir, tmp_path):
    corpus = [_corpus(tmp_path / "c.txt", ["lovely tea"])]
    for masker in (SelectiveMasker, EntropyMasker):
        with pytest.raises(
            BertlabError,
            match=r"the (Selective|Entropy)Masker needs `scorer: \{kind: model_b \| entropy, model: DIR\}`",
        ):
            _ = _mlm(tiny_bert_dir, tmp_path, corpus=corpus, masker=masker).masker


# ------------------------------------------------------------ batches


def test_train_batches_mask_about_15_percent_and_never_specials(tiny_bert_dir, tok, tmp_path):
    texts, _ = make_texts(400, seed=11)
    dm = _mlm(
        tiny_bert_dir,
        tmp_path,
        corpus=[_corpus(tmp_path / "c.txt", texts)],
        max_length=32,
        val_fraction=0.1,
        loader=Loader(batch_size=64),
    )
    dm.setup()
    assert len(dm.datasets["train"]) >= 300
    specials = torch.tensor(tok.all_special_ids)
    masked = maskable = rows = 0
    for batch in dm.train_dataloader():
        labels, attention = batch["labels"], batch["attention_mask"]
        assert labels.shape == batch["input_ids"].shape
        last = attention.sum(1) - 1
        assert (labels[:, 0] == -100).all()  # [CLS]
        assert (labels.gather(1, last.unsqueeze(1)) == -100).all()  # [SEP]
        assert (labels[attention == 0] == -100).all()  # padding
        assert not torch.isin(labels[labels != -100], specials).any()
        masked += int((labels != -100).sum())
        maskable += int(attention.sum() - 2 * len(labels))
        rows += len(labels)
    assert rows == len(dm.datasets["train"])
    assert masked / maskable == pytest.approx(0.15, abs=0.03), (masked, maskable)


def test_val_loader_masks_are_fixed(tiny_bert_dir, tmp_path):
    texts, _ = make_texts(200, seed=12)
    dm = _mlm(
        tiny_bert_dir,
        tmp_path,
        corpus=[_corpus(tmp_path / "c.txt", texts)],
        max_length=32,
        val_fraction=0.25,
        loader=Loader(batch_size=16),
    )
    dm.setup()
    loader = dm.val_dataloader()
    passes = [list(loader), list(loader), list(dm.val_dataloader())]
    assert sum(int((b["labels"] != -100).sum()) for b in passes[0]) > 20
    for other in passes[1:]:
        assert len(other) == len(passes[0])
        for a, b in zip(passes[0], other):
            assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


@pytest.mark.parametrize("group_by_length", [True, False])
def test_ddp_sampler_wrapper_passes_the_epoch_to_the_masker(tiny_bert_dir, tmp_path, group_by_length):
    """Under DDP Lightning wraps our sampler in DistributedSamplerWrapper; a static masker must still
    learn the epoch, or every epoch would train on the same masked copy."""
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    texts, _ = make_texts(60, seed=13)
    dm = _mlm(
        tiny_bert_dir,
        tmp_path,
        corpus=[_corpus(tmp_path / "c.txt", texts)],
        max_length=32,
        masker=functools.partial(StaticMasker, dupe_factor=4),
        loader=Loader(batch_size=8, group_by_length=group_by_length),
    )
    dm.setup()
    loader = dm.train_dataloader()
    wrapped = DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=1, shuffle=True, seed=0)
    for epoch in (0, 3):
        wrapped.set_epoch(epoch)
        assert dm.masker.epoch == epoch
    n = len(dm.datasets["train"])
    assert len(list(iter(wrapped))) == (n + 1) // 2  # rank 1 gets its half


def test_chunked_word_ids_keep_their_types(tmp_path):
    from datamodules.token_cache import write_array_chunks

    write_array_chunks(str(tmp_path), [([[1, 2], [3]], [[0, -1], [5]]), ([[4, 5, 6]], [[300, 0, 1]])])
    arrays = TokenArrays(str(tmp_path))
    assert arrays.get(2)["token_type_ids"].tolist() == [300, 0, 1] and arrays.types.dtype == np.int32
    assert arrays.get(0)["token_type_ids"].tolist() == [0, -1] and len(arrays) == 3


def test_a_corpus_the_tokenizer_does_not_cover_is_refused(tiny_bert_dir, tmp_path):
    corpus = [_corpus(tmp_path / "zh.txt", ["我爱北京天安门", "北京很大", "the tea was great"])]
    with pytest.raises(BertlabError, match=r"training tokens are \[UNK\].*'北'.*--data.max_unk_fraction 1"):
        _mlm(tiny_bert_dir, tmp_path, corpus=corpus, val_fraction=0).setup()
