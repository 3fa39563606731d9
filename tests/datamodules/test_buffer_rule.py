"""Gu et al.'s buffer rule: a hand-worked example, and the batched form against the naive loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from datamodules.buffer_rule import (
    buffer_rule_labels,
    continuation_word_ids,
    naive_buffer_rule_labels,
    word_runs,
)
from datamodules.task_scorer import classifier_probs
from tests.conftest import build_tiny_bert, make_texts

CLS, SEP, PAD = 2, 3, 0
THE, GREAT, VERY, NOT = 6, 5, 7, 8
WEIGHTS = torch.zeros(16)
WEIGHTS[[GREAT, VERY, NOT]] = torch.tensor([0.3, 0.004, -0.3])


def linear_probs(input_ids, attention_mask):
    """A stub Model_0: P(pos | x) = 0.5 + the summed weights of x's tokens (specials and padding weigh 0)."""
    p = 0.5 + (WEIGHTS[input_ids] * attention_mask).sum(1)
    return torch.stack([1 - p, p], dim=1)


SENTENCE = [THE, GREAT, VERY, NOT, GREAT]  # P(pos | s) = 0.804


@pytest.mark.parametrize("rule", [buffer_rule_labels, naive_buffer_rule_labels])
def test_hand_worked_example(rule):
    # s' = []:                      + the   -> 0.500, gap 0.304: kept,      s' = [the]
    # s' = [the]:                   + great -> 0.800, gap 0.004 < δ: important, taken out again
    # s' = [the]:                   + very  -> 0.504, gap 0.300: kept,      s' = [the, very]
    # s' = [the, very]:             + not   -> 0.204, gap 0.600: kept,      s' = [the, very, not]
    # s' = [the, very, not]:        + great -> 0.504, gap 0.300: kept (the first "great" is no longer there)
    (labels,) = rule(linear_probs, [SENTENCE], [list(range(5))], [1], [CLS], [SEP], PAD, delta=0.01)
    assert labels.tolist() == [0, 1, 0, 0, 0]
    # δ = 0.31: [the] 0.304, [great] 0.004, [very] 0.300 are important (the buffer stays empty); [not] 0.604
    # is kept; [not, great] 0.304 is important
    (wide,) = rule(linear_probs, [SENTENCE], [list(range(5))], [1], [CLS], [SEP], PAD, delta=0.31)
    assert wide.tolist() == [1, 1, 1, 0, 1]


@pytest.mark.parametrize("rule", [buffer_rule_labels, naive_buffer_rule_labels])
def test_only_correctly_classified_sentences_are_labelled(rule):
    out = rule(linear_probs, [SENTENCE, SENTENCE, []], [list(range(5))] * 2 + [[]], [1, 0, 1], [CLS], [SEP], PAD)
    assert out[0] is not None and out[1] is None and out[2] is None


def test_whole_words_move_together():
    # "great" split into two pieces: both pieces enter the buffer together and share the label
    (labels,) = buffer_rule_labels(linear_probs, [[THE, GREAT, THE]], [[0, 1, 1]], [1], [CLS], [SEP], PAD)
    assert labels.tolist() == [0, 1, 1]


def test_word_runs_and_continuations():
    assert word_runs([-1, 0, 0, 1, -1, 2]) == [(1, 3), (3, 4), (5, 6)]
    cont = np.array([False, True, False])
    assert continuation_word_ids([0, 1, 1, 2, 0], cont) == [0, 0, 0, 1, 2]


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.5])
def test_delta_outside_the_open_interval(delta):
    with pytest.raises(ValueError, match="delta"):
        buffer_rule_labels(linear_probs, [SENTENCE], [list(range(5))], [1], [CLS], [SEP], PAD, delta=delta)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A random 2-layer BERT classifier over a 60-piece vocab (many words split into ## pieces)."""
    texts = make_texts(200)[0]
    path = build_tiny_bert(str(tmp_path_factory.mktemp("split_clf")), texts, vocab_size=60)
    tok = AutoTokenizer.from_pretrained(path)
    config = BertConfig.from_pretrained(path, num_labels=2, initializer_range=0.3)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval(), tok


def test_batched_equals_naive_on_a_tiny_bert(tiny_classifier):
    model, tok = tiny_classifier
    texts, _ = make_texts(40, seed=4)
    ids = [tok(t, add_special_tokens=False)["input_ids"][:40] for t in texts]
    cont = np.array([p.startswith("##") for p in tok.convert_ids_to_tokens(list(range(len(tok))))])
    words = [continuation_word_ids(x, cont) for x in ids]
    prob_fn = classifier_probs(model)
    with torch.no_grad():
        preds = [int(prob_fn(*_single(tok, x)).argmax()) for x in ids]
    gold = [p if i % 4 else 1 - p for i, p in enumerate(preds)]  # every 4th sentence misclassified
    args = (ids, words, gold, [tok.cls_token_id], [tok.sep_token_id], tok.pad_token_id)
    for delta in (0.005, 0.02):
        batched = buffer_rule_labels(prob_fn, *args, delta=delta, batch_size=16)
        naive = naive_buffer_rule_labels(prob_fn, *args, delta=delta)
        assert [None if b is None else b.tolist() for b in batched] == [
            None if n is None else n.tolist() for n in naive
        ]
        labelled = [b for b in batched if b is not None]
        assert len(labelled) == 30
        flat = np.concatenate(labelled)
        assert 0 < flat.mean() < 1  # the example is not degenerate
        assert any(sum(1 for w in set(ws)) < len(ws) for ws in words)  # some words have several pieces


def _single(tok, ids):
    x = torch.tensor([[tok.cls_token_id, *ids, tok.sep_token_id]])
    return x, torch.ones_like(x)
