"""Gu et al.'s buffer rule: hand-worked examples, an independent port of the authors' loop on random
probability functions, and the batched form against the naive loop."""

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


THE2, GREAT2, BUT, MEH = 9, 10, 11, 12
OVERSHOOT = torch.zeros(16)
OVERSHOOT[[GREAT2, MEH]] = torch.tensor([0.45, -0.13])


def overshoot_probs(input_ids, attention_mask):
    p = 0.5 + (OVERSHOOT[input_ids] * attention_mask).sum(1)
    return torch.stack([1 - p, p], dim=1)


@pytest.mark.parametrize("rule", [buffer_rule_labels, naive_buffer_rule_labels])
def test_a_prefix_that_overshoots_is_important(rule):
    # "the great but meh", P(pos | s) = 0.82 (the example):
    # s' = []:          + the   -> 0.50, 0.82 - 0.50 = 0.32: kept,      s' = [the]
    # s' = [the]:       + great -> 0.95, 0.82 - 0.95 = -0.13 < δ: important (overshoots), taken out
    # s' = [the]:       + but   -> 0.50, 0.32: kept,                     s' = [the, but]
    # s' = [the, but]:  + meh   -> 0.37, 0.45: kept
    # (the symmetric |·| < δ would keep "great" in the buffer and label "meh": [the great but meh] = 0.82)
    (labels,) = rule(overshoot_probs, [[THE2, GREAT2, BUT, MEH]], [[0, 1, 2, 3]], [1], [CLS], [SEP], PAD)
    assert labels.tolist() == [0, 1, 0, 0]


def sm_port(prob_of, sentences, gold, threshold):
    """Gu et al.'s loop (``SC.forward`` in thunlp/SelectiveMasking ``data/sc_mask_gen.py``), ported
    independently of ``datamodules.buffer_rule``: token units, the buffer seeded with the first token,
    all live sentences scored once per position, the signed test, pop when important, append the next."""
    scores = [prob_of(s) for s in sentences]
    right = [i for i, s in enumerate(sentences) if s and int(np.argmax(scores[i])) == gold[i]]
    masked = {i: list(sentences[i][0:1]) for i in right}
    chosen = {i: [] for i in right}
    pos = 0
    while masked:
        step = {i: prob_of(buf) for i, buf in masked.items()}
        survivors = {}
        for i, buf in masked.items():
            if scores[i][gold[i]] - step[i][gold[i]] < threshold:
                chosen[i].append(pos)
                buf.pop()
            if pos + 1 < len(sentences[i]):
                buf.append(sentences[i][pos + 1])
                survivors[i] = buf
        masked = survivors
        pos += 1
    out = [None] * len(sentences)
    for i in right:
        out[i] = [int(p in chosen[i]) for p in range(len(sentences[i]))]
    return out


class RandomProbs:
    """An arbitrary function from a token sequence to 3-class probabilities: each distinct sequence gets
    its own Dirichlet draw (seeded by the sequence), so prefixes overshoot, undershoot and tie at random."""

    def __init__(self, seed: int, concentration: float):
        self.seed, self.concentration = seed, concentration

    def of(self, tokens) -> np.ndarray:
        rng = np.random.default_rng([self.seed, len(tokens), *[int(t) for t in tokens]])
        return rng.dirichlet([self.concentration] * 3)

    def __call__(self, input_ids, attention_mask):
        rows = [ids[m.bool()][1:-1].tolist() for ids, m in zip(input_ids, attention_mask)]  # strip [CLS] … [SEP]
        return torch.tensor(np.stack([self.of(r) for r in rows]), dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_equal_an_independent_port_of_the_authors_loop(seed):
    rng = np.random.default_rng(seed)
    probs = RandomProbs(seed, concentration=4.0)  # a flat-ish Dirichlet: many candidates near P(y | s)
    sentences = [rng.integers(4, 16, size=int(rng.integers(0, 12))).tolist() for _ in range(60)]
    gold = [int(np.argmax(probs.of(s))) if i % 3 else int(rng.integers(0, 3)) for i, s in enumerate(sentences)]
    threshold = 0.05
    expected = sm_port(probs.of, sentences, gold, threshold)
    words = [list(range(len(s))) for s in sentences]
    args = (sentences, words, gold, [CLS], [SEP], PAD)
    batched = buffer_rule_labels(probs, *args, delta=threshold, batch_size=7)
    naive = naive_buffer_rule_labels(probs, *args, delta=threshold)
    as_lists = [[None if x is None else x.tolist() for x in out] for out in (batched, naive)]
    assert as_lists[0] == expected and as_lists[1] == expected
    # not degenerate: some sentences are dropped as misclassified, and some labels come from an overshoot
    labelled = [x for x in expected if x is not None]
    assert 10 < len(labelled) < 60 and 0.05 < np.mean(np.concatenate(labelled)) < 0.95
    assert _overshoots(probs.of, sentences, gold, expected, threshold) > 0


def _overshoots(prob_of, sentences, gold, labels, delta):
    """How many important words got there by P(y | s′ w) > P(y | s) + δ (which |·| < δ would not label)."""
    count = 0
    for s, y, lab in zip(sentences, gold, labels):
        if lab is None:
            continue
        p_s, buf = prob_of(s)[y], []
        for w, important in zip(s, lab):
            if important:
                count += prob_of(buf + [w])[y] - p_s >= delta
            else:
                buf.append(w)
    return count


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
