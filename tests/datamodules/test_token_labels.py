"""``TokenLabelDataModule``: sentences, buffer-rule labels from a tiny Model_0, Gu et al.'s training data for
Model_b (misclassified sentences all-zero, stopwords never important), cached, split, and refused on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bertlab.core.errors import BertlabError
from datamodules.sentence_labels import UNLABELLED
from datamodules.splits import Splits
from datamodules.stopwords import is_stopword
from datamodules.token_labels import TokenLabelDataModule
from tests.conftest import make_texts
from tests.selective_models import save_classifier


@pytest.fixture(scope="module")
def model0(tmp_path_factory, tiny_bert_dir, tiny_csvs):
    return save_classifier(
        str(tmp_path_factory.mktemp("model0")), tiny_bert_dir, train_csv=tiny_csvs["train"], steps=60
    )


@pytest.fixture(scope="module")
def two_sentence_csvs(tmp_path_factory):
    """Documents of two sentences: one with the document's sentiment, then one with the other sentiment
    (which Model_0, classifying it on its own, gets wrong)."""
    root, paths = tmp_path_factory.mktemp("docs"), {}
    for split, n, seed in [("train", 60, 5), ("val", 20, 6)]:
        texts, labels = make_texts(2 * n, seed)  # pos, neg, pos, neg, ...
        docs, doc_labels = [], []
        for k in range(n):
            first, second = (2 * k, 2 * k + 1) if k % 2 == 0 else (2 * k + 1, 2 * k)
            # capitalised: pysbd, like a reader, does not end a sentence before a lower-case word
            docs.append(f"{texts[first].rstrip('.!').capitalize()}. {texts[second].rstrip('.!').capitalize()}!")
            doc_labels.append(labels[first])
        pd.DataFrame({"text": docs, "label": doc_labels}).to_csv(root / f"{split}.csv", index=False)
        paths[split] = str(root / f"{split}.csv")
    return paths


def make(tiny_bert_dir, csvs, model0, cache, **kw):
    task = Splits(train_file=csvs["train"], val_file=csvs["val"])
    return TokenLabelDataModule(
        tokenizer=tiny_bert_dir,
        task=task,
        model0=model0,
        max_length=32,
        cache_dir=str(cache),
        batch_size=8,
        **{"delta": 0.05, "precision": "fp32", **kw},
    )


def test_labels_splits_and_batches(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    dm = make(tiny_bert_dir, tiny_csvs, model0, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.labels_built_now is True
    train = dm.labels["train"]
    assert set(np.unique(train.labels)) <= {UNLABELLED, 0, 1} and (train.labels == 1).any()
    n_train, n_val, n_test = (len(dm.datasets[s]) for s in ("train", "val", "test"))
    assert n_train + n_val == len(train) and n_train > 3 * n_val > 0 and n_test == len(dm.labels["val"])
    held = {int(train.doc[i]) for i in dm.datasets["val"].rows}
    assert not held & {int(train.doc[i]) for i in dm.datasets["train"].rows}  # held out by document
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    specials = torch.isin(batch["input_ids"], torch.tensor(dm.tokenizer.all_special_ids))
    assert (batch["labels"][specials] == -100).all()
    assert ((batch["labels"] == 0) | (batch["labels"] == 1))[~specials & batch["attention_mask"].bool()].all()
    summary = dm.summary()
    assert 0 < summary["train"]["important_share"] < 1 and summary["train"]["sentences"] == len(train)


def test_documents_become_sentences_each_classified_on_its_own(tiny_bert_dir, two_sentence_csvs, model0, tmp_path):
    dm = make(tiny_bert_dir, two_sentence_csvs, model0, tmp_path)
    train, frame = dm.labels["train"], pd.read_csv(two_sentence_csvs["train"])
    assert len(train) == 2 * len(frame) and np.array_equal(train.doc, np.repeat(np.arange(len(frame)), 2))
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model0).eval()
    predicted = []
    for i in range(len(train)):
        ids = torch.as_tensor(train.row(i)[0], dtype=torch.long)[None]
        predicted.append(int(model(input_ids=ids).logits.argmax()))
        assert tok.decode(ids[0, -2]) in ".!"  # the sentence ends at its own ender
    gold = frame["label"].map({"neg": 0, "pos": 1}).to_numpy()[train.doc]
    assert np.array_equal(train.correct, np.array(predicted) == gold)
    assert 0.3 < train.correct.mean() < 0.7  # mostly the first sentence of each document
    # ``splitter: none`` keeps each document whole
    assert len(make(tiny_bert_dir, two_sentence_csvs, model0, tmp_path, splitter="none").labels["train"]) == len(frame)


def test_misclassified_sentences_go_in_all_zero_or_are_dropped(tiny_bert_dir, two_sentence_csvs, model0, tmp_path):
    zeros = make(tiny_bert_dir, two_sentence_csvs, model0, tmp_path)
    train = zeros.labels["train"]
    rows, flat = zeros.targets(train)
    wrong = [i for i in range(len(train)) if not train.correct[i]]
    assert wrong and set(wrong) <= set(rows)
    for i in wrong:
        a, b = train.offsets[i], train.offsets[i + 1]
        assert flat[a] == UNLABELLED and flat[b - 1] == UNLABELLED and (flat[a + 1 : b - 1] == 0).all()
    dropped = make(tiny_bert_dir, two_sentence_csvs, model0, tmp_path, misclassified="drop")
    assert dropped.targets(dropped.labels["train"])[0] == [i for i in range(len(train)) if train.correct[i]]
    assert dropped.labels_built_now is False  # the options reuse the cached labels


def test_stopwords_are_never_important(tiny_bert_dir, tiny_csvs, model0, tmp_path, monkeypatch):
    import datamodules.token_labels as module

    monkeypatch.setattr(module, "buffer_rule_labels", lambda f, s, *a, **k: [np.ones(len(x), np.int8) for x in s])
    for drop in (True, False):
        dm = make(tiny_bert_dir, tiny_csvs, model0, tmp_path, drop_stopwords=drop)
        train = dm.labels["train"]
        _, flat = dm.targets(train)
        words = dm.tokenizer.convert_ids_to_tokens(train.ids.tolist())
        stop = np.array([is_stopword(w) for w in words]) & (train.labels == 1)
        assert stop.sum() > 50  # "the", "a", "it", ... in the tiny reviews
        assert (flat[stop] == (0 if drop else 1)).all() and (flat[(train.labels == 1) & ~stop] == 1).all()


def test_labels_are_cached_and_keyed_by_model0_content(tiny_bert_dir, tiny_csvs, model0, tmp_path, monkeypatch):
    first = make(tiny_bert_dir, tiny_csvs, model0, tmp_path)
    labels = first.labels
    import datamodules.token_labels as module

    monkeypatch.setattr(module, "buffer_rule_labels", lambda *a, **k: pytest.fail("recomputed"))
    again = make(tiny_bert_dir, tiny_csvs, model0, tmp_path)
    assert np.array_equal(again.labels["train"].labels, labels["train"].labels) and again.labels_built_now is False
    monkeypatch.undo()
    assert make(tiny_bert_dir, tiny_csvs, model0, tmp_path, delta=0.02).labels_built_now is None  # lazy
    retrained = save_classifier(str(tmp_path / "retrained"), tiny_bert_dir, train_csv=tiny_csvs["train"], steps=61)
    other = make(tiny_bert_dir, tiny_csvs, retrained, tmp_path)
    other.prepare_data()
    assert other.labels_built_now is True


def test_bad_model0_delta_and_options(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    with pytest.raises(BertlabError, match="not a sequence classifier"):
        make(tiny_bert_dir, tiny_csvs, tiny_bert_dir, tmp_path).prepare_data()
    other = save_classifier(str(tmp_path / "three"), tiny_bert_dir, labels=("bad", "good", "meh"))
    with pytest.raises(BertlabError, match=r"predicts labels \['bad', 'good', 'meh'\], but the task's labels"):
        make(tiny_bert_dir, tiny_csvs, other, tmp_path).prepare_data()
    for delta in (0, 1, 1.5, -0.1):
        with pytest.raises(BertlabError, match=r"delta .* must be in \(0, 1\)"):
            make(tiny_bert_dir, tiny_csvs, model0, tmp_path, delta=delta)
    with pytest.raises(BertlabError, match="misclassified must be one of zeros, drop, got 'keep'"):
        make(tiny_bert_dir, tiny_csvs, model0, tmp_path, misclassified="keep")
    with pytest.raises(BertlabError, match="sentence splitter must be one of"):
        make(tiny_bert_dir, tiny_csvs, model0, tmp_path, splitter="spacy")


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
