"""Scoring steps: shapes, zeros at specials and padding, and values checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from datamodules.maskers import SelectiveMasker
from datamodules.token_scoring import entropy_scores, importance_scores

CLS, SEP, PAD, MASK = 2, 3, 0, 4
SPECIALS = [PAD, 1, CLS, SEP, MASK]


def logistic_setup(vocab=12, decisive=7):
    """One-hot embeddings and a bag-of-words linear classifier in which only ``decisive`` matters much."""
    embed = nn.Embedding(vocab, vocab)
    embed.weight.data = torch.eye(vocab)
    weight = torch.full((vocab, 2), 0.1)
    weight[decisive] = torch.tensor([-3.0, 3.0])

    def logits_fn(inputs_embeds, attention_mask):
        return (inputs_embeds * attention_mask.unsqueeze(-1)).sum(1) @ weight

    return embed, logits_fn


def test_the_decisive_token_gets_the_top_importance():
    embed, logits_fn = logistic_setup()
    batch = {
        "input_ids": torch.tensor([[CLS, 5, 6, 7, 8, SEP, PAD], [CLS, 9, 7, 10, 11, 5, SEP]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1] * 7]),
    }
    scores = importance_scores(logits_fn, batch, special_ids=SPECIALS, embed=embed)
    assert scores.shape == (2, 7)
    assert scores[0].argmax() == 3 and scores[1].argmax() == 2
    # grad of z_1 w.r.t. a one-hot e_t is W[:, 1], so grad x input is W[id_t, 1]
    assert torch.allclose(scores[0, 1:5], torch.tensor([0.1, 0.1, 3.0, 0.1]))
    assert (scores[0, [0, 5, 6]] == 0).all() and (scores[1, [0, 6]] == 0).all()
    # the top-scored token is the one a selective masker picks
    feats = [
        {"input_ids": ids[m.bool()].tolist(), "scores": s[m.bool()].tolist()}
        for ids, m, s in zip(batch["input_ids"], batch["attention_mask"], scores)
    ]
    tok = type(
        "Tok", (), {"mask_token_id": MASK, "pad_token_id": PAD, "all_special_ids": SPECIALS, "__len__": lambda self: 12}
    )()
    out = SelectiveMasker(tok, mlm_probability=0.2, whole_word=False)(feats)
    assert (out["labels"] != -100).nonzero().tolist() == [[0, 3], [1, 2]]


def test_importance_of_a_tiny_hf_classifier(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    model.train()
    batch = tok(
        ["the coffee was great", "awful tea and stale cookies arrived"],
        padding=True,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    scores = importance_scores(model, dict(batch))
    assert scores.shape == batch["input_ids"].shape
    zero = batch["special_tokens_mask"].bool() | (batch["attention_mask"] == 0)
    assert (scores[zero] == 0).all() and (scores[~zero] > 0).all() and torch.isfinite(scores).all()
    assert model.training and all(p.grad is None for p in model.parameters())


class TableMLM(nn.Module):
    """Logits at a position depend only on the id there: a lookup table."""

    def __init__(self, vocab=8):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        torch.manual_seed(0)
        self.table.weight.data = torch.randn(vocab, vocab) * 2

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.table(input_ids)


def hand_entropy(row):
    z = [math.exp(x) for x in row.tolist()]
    return -sum(p / sum(z) * math.log(p / sum(z)) for p in z)


def test_entropy_matches_a_hand_computation():
    model = TableMLM()
    batch = {
        "input_ids": torch.tensor([[CLS, 5, 6, 7, SEP], [CLS, 6, SEP, PAD, PAD]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    }
    scores = entropy_scores(model, batch, MASK, special_ids=SPECIALS)
    assert scores.shape == (2, 5)
    expected = torch.tensor(
        [
            [0, *(hand_entropy(model.table.weight[i]) for i in (5, 6, 7)), 0],
            [0, hand_entropy(model.table.weight[6]), 0, 0, 0],
        ]
    )
    assert torch.allclose(scores, expected.float(), atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 3, 256])
def test_entropy_with_each_position_masked(chunk_size):
    model = TableMLM()
    batch = {
        "input_ids": torch.tensor([[CLS, 5, 6, 7, SEP], [CLS, 6, SEP, PAD, PAD]]),
        "special_tokens_mask": torch.tensor([[1, 0, 0, 0, 1], [1, 0, 1, 1, 1]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    }
    scores = entropy_scores(model, batch, MASK, mask_each=True, chunk_size=chunk_size)
    at_mask = hand_entropy(model.table.weight[MASK])
    keep = batch["special_tokens_mask"] == 0
    assert torch.allclose(scores[keep], torch.full((4,), at_mask), atol=1e-5) and (scores[~keep] == 0).all()
