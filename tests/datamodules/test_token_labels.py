"""``TokenLabelDataModule``: buffer-rule labels from a tiny Model_0, cached, split, and refused on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertlab.core.errors import BertlabError
from datamodules.splits import Splits
from datamodules.token_labels import UNLABELLED, TokenLabelDataModule
from tests.selective_models import save_classifier


@pytest.fixture(scope="module")
def model0(tmp_path_factory, tiny_bert_dir, tiny_csvs):
    return save_classifier(
        str(tmp_path_factory.mktemp("model0")), tiny_bert_dir, train_csv=tiny_csvs["train"], steps=60
    )


def make(tiny_bert_dir, tiny_csvs, model0, cache, **kw):
    task = Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"])
    return TokenLabelDataModule(
        tokenizer=tiny_bert_dir,
        task=task,
        model0=model0,
        max_length=32,
        cache_dir=str(cache),
        batch_size=8,
        **{"delta": 0.05, **kw},
    )


def test_labels_splits_and_batches(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    dm = make(tiny_bert_dir, tiny_csvs, model0, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.labels_built_now is True
    train = dm.labels["train"]
    assert set(np.unique(train)) <= {UNLABELLED, 0, 1} and (train == 1).any() and (train == 0).any()
    n_train, n_val, n_test = (len(dm.datasets[s]) for s in ("train", "val", "test"))
    assert n_train > 3 * n_val > 0 and n_test > 0
    assert not set(dm.datasets["train"].rows) & set(dm.datasets["val"].rows)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    specials = torch.isin(batch["input_ids"], torch.tensor(dm.tokenizer.all_special_ids))
    assert (batch["labels"][specials] == -100).all()
    assert ((batch["labels"] == 0) | (batch["labels"] == 1))[~specials].all()  # correctly classified only
    summary = dm.summary()
    assert 0 < summary["train"]["important_share"] < 1


def test_labels_are_cached_and_keyed_by_model0_content(tiny_bert_dir, tiny_csvs, model0, tmp_path, monkeypatch):
    first = make(tiny_bert_dir, tiny_csvs, model0, tmp_path)
    labels = first.labels
    import datamodules.token_labels as module

    monkeypatch.setattr(module, "buffer_rule_labels", lambda *a, **k: pytest.fail("recomputed"))
    again = make(tiny_bert_dir, tiny_csvs, model0, tmp_path)
    assert np.array_equal(again.labels["train"], labels["train"]) and again.labels_built_now is False
    monkeypatch.undo()
    assert make(tiny_bert_dir, tiny_csvs, model0, tmp_path, delta=0.02).labels_built_now is None  # lazy
    retrained = save_classifier(str(tmp_path / "retrained"), tiny_bert_dir, train_csv=tiny_csvs["train"], steps=61)
    other = make(tiny_bert_dir, tiny_csvs, retrained, tmp_path)
    other.prepare_data()
    assert other.labels_built_now is True


def test_bad_model0_and_delta(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    with pytest.raises(BertlabError, match="not a sequence classifier"):
        make(tiny_bert_dir, tiny_csvs, tiny_bert_dir, tmp_path).prepare_data()
    other = save_classifier(str(tmp_path / "three"), tiny_bert_dir, labels=("bad", "good", "meh"))
    with pytest.raises(BertlabError, match=r"predicts labels \['bad', 'good', 'meh'\], but the task's labels"):
        make(tiny_bert_dir, tiny_csvs, other, tmp_path).prepare_data()
    for delta in (0, 1, 1.5, -0.1):
        with pytest.raises(BertlabError, match=r"delta .* must be in \(0, 1\)"):
            make(tiny_bert_dir, tiny_csvs, model0, tmp_path, delta=delta)


def test_nothing_important_or_nothing_correct(tiny_bert_dir, tiny_csvs, model0, tmp_path, monkeypatch):
    import datamodules.token_labels as module

    # float32 probabilities tie exactly too often to make a real model mark nothing: stub the rule's outcome
    monkeypatch.setattr(module, "buffer_rule_labels", lambda f, s, *a, **k: [np.zeros(len(x), np.int8) for x in s])
    with pytest.raises(
        BertlabError, match="no token scores as important at δ = 0.05 on the task.s train sentences; raise `delta`"
    ):
        make(tiny_bert_dir, tiny_csvs, model0, tmp_path / "a").prepare_data()
    monkeypatch.setattr(module, "buffer_rule_labels", lambda f, s, *a, **k: [None for _ in s])
    with pytest.raises(BertlabError, match="classifies none of the labelled train sentences correctly"):
        make(tiny_bert_dir, tiny_csvs, model0, tmp_path / "b").prepare_data()
