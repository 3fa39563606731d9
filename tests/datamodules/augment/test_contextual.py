"""Contextual substitution (datamodules/augment/contextual.py) through the tiny random BERT fixture."""

from __future__ import annotations

import pytest

from bertlab.core.errors import BertlabError
from datamodules.augment import ContextualSubstitution, build_augmenter
from datamodules.augment.words import is_word, split_words
from tests.conftest import make_texts

SPECIALS = ("[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "##")


@pytest.fixture(scope="module")
def augmenter(tiny_bert_dir):
    return ContextualSubstitution(tiny_bert_dir, n_aug=3, rate=0.3, top_k=5, batch_size=4)


@pytest.fixture(scope="module")
def texts():
    return make_texts(6, seed=11)[0] + ["The Coffee was GREAT, 10/10 - would buy again!"]


def test_variants_are_whole_words_in_place(augmenter, texts):
    variants = augmenter(texts, seed=0)
    assert [len(v) for v in variants] == [3] * len(texts)
    changed = 0
    for text, vs in zip(texts, variants):
        original = split_words(text)
        for v in vs:
            assert not any(s in v for s in SPECIALS), v
            new = split_words(v)
            assert len(new) == len(original)
            for (_, o), (_, w) in zip(original, new):
                assert (o == w) if not is_word(o) else is_word(w)  # punctuation and numbers stay, words stay words
            changed += v != text
    assert changed >= len(texts) * 2


def test_capitalisation_is_carried_over(augmenter):
    text = "The Coffee Was Great And The Tea Was Lovely"
    for v in augmenter([text], seed=1)[0]:
        assert v != text and all(w[:1].isupper() for w in v.split())


def test_deterministic_per_seed_whatever_the_batch(augmenter, tiny_bert_dir, texts):
    first = augmenter(texts, seed=3)
    assert augmenter(texts, seed=3) == first
    fresh = ContextualSubstitution(tiny_bert_dir, n_aug=3, rate=0.3, top_k=5, batch_size=32)
    assert fresh(texts, seed=3) == first
    assert fresh(texts[::-1], seed=3) == first[::-1]
    assert augmenter(texts, seed=4) != first


@pytest.mark.parametrize("text", ["", "  ", "Hello", "Great!", "10/10"])
def test_short_texts_come_back_unchanged(augmenter, text):
    assert augmenter([text, "the coffee was great"], seed=0)[0] == [text] * 3


def test_fingerprint_and_errors(augmenter, tiny_bert_dir, tmp_path):
    assert (
        augmenter.fingerprint()
        == build_augmenter("contextual", model_dir=tiny_bert_dir, n_aug=3, rate=0.3, top_k=5).fingerprint()
    )
    assert augmenter.fingerprint() != ContextualSubstitution(tiny_bert_dir, n_aug=3, rate=0.2, top_k=5).fingerprint()
    with pytest.raises(BertlabError, match="not a model directory"):
        ContextualSubstitution(str(tmp_path / "missing"))
    for bad in [{"rate": 1.5}, {"rate": -0.1}, {"top_k": 0}, {"n_aug": 0}]:
        with pytest.raises(BertlabError):
            ContextualSubstitution(tiny_bert_dir, **bad)
