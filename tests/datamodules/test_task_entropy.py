"""Entropy scores of Model_0's task prediction under masking one word at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.task_entropy import task_entropy_scores

CLS, SEP, MASK, THE, GREAT, AWFUL = 2, 3, 4, 6, 5, 7


class CountingStub:
    """P(pos) = sigmoid(count(great) − count(awful)); every other token cannot change the prediction."""

    def __init__(self):
        self.calls = []

    def __call__(self, input_ids, attention_mask):
        self.calls.append(tuple(input_ids.shape))
        z = ((input_ids == GREAT).sum(1) - (input_ids == AWFUL).sum(1)).double()
        p = torch.sigmoid(z)
        return torch.stack([1 - p, p], dim=1)


def h(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def sig(z):
    return 1 / (1 + math.exp(-z))


IDS = [CLS, THE, GREAT, GREAT, THE, AWFUL, SEP]
WORDS = [-1, 0, 1, 1, 2, 3, -1]  # "great great" is one word of two pieces


def test_a_token_that_cannot_change_the_prediction_scores_exactly_zero():
    stub = CountingStub()
    scores = task_entropy_scores(stub, IDS, WORDS, MASK)
    assert scores[1] == 0.0 and scores[4] == 0.0  # "the"
    assert scores[0] == 0.0 and scores[-1] == 0.0  # specials
    # p(s) = σ(2 − 1); masking "great great" gives σ(−1), masking "awful" σ(2)
    assert scores[2] == scores[3] == pytest.approx(abs(h(sig(-1)) - h(sig(1))), abs=1e-6)
    assert scores[5] == pytest.approx(abs(h(sig(2)) - h(sig(1))), abs=1e-6)
    assert stub.calls == [(5, 7)]  # the original and its 4 masked variants: one batch


def test_kl_option():
    scores = task_entropy_scores(CountingStub(), IDS, WORDS, MASK, divergence="kl")
    p, q = sig(1), sig(-1)  # σ(1) vs σ(−1) have equal entropy: |ΔH| = 0, but KL sees the flip
    kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert scores[2] == pytest.approx(kl, abs=1e-6) and scores[2] > 0.4
    assert scores[1] == 0.0
    assert task_entropy_scores(CountingStub(), IDS, WORDS, MASK)[2] == pytest.approx(0.0, abs=1e-6)


def test_nothing_to_mask():
    stub = CountingStub()
    assert not task_entropy_scores(stub, [CLS, MASK, SEP], [-1, 0, -1], MASK).any()
    assert stub.calls == []
    with pytest.raises(ValueError, match="divergence"):
        task_entropy_scores(stub, IDS, WORDS, MASK, divergence="js")


def test_scores_are_float32_per_position():
    scores = task_entropy_scores(CountingStub(), np.array(IDS), WORDS, MASK)
    assert scores.dtype == np.float32 and scores.shape == (len(IDS),)
