"""Per-sentence corpus scoring: each sentence of a row is scored on its own, wrapped in [CLS] … [SEP]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from datamodules.corpus_scoring import resolve_scorer, score_corpus
from datamodules.sentence_scorers import EntropyScorer, ModelBScorer
from datamodules.task_entropy import task_entropy_scores
from datamodules.task_scorer import classifier_probs
from tests.selective_models import save_classifier, save_token_tagger

TEXTS = ["great tea. awful box! fresh", "the coffee was stale.", "lovely snack! it arrived broken. bland"]


class Rows:
    """The ``TokenArrays`` interface over token lists in memory."""

    def __init__(self, rows):
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows]
        self.offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])

    def __len__(self):
        return len(self.rows)

    def lengths(self):
        return np.diff(self.offsets)

    def get(self, i):
        return {"input_ids": self.rows[i]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("scorers")
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model_b = save_token_tagger(str(root / "model_b"), tiny_bert_dir)
    model0 = save_classifier(str(root / "model0"), tiny_bert_dir, initializer_range=0.3)
    return tok, model_b, model0, Rows([tok(t)["input_ids"] for t in TEXTS])


def sentences_of(tok, text):
    return [s.strip() for s in text.replace("!", "!|").replace(".", ".|").split("|") if s.strip()]


def test_model_b_scores_each_sentence_alone(setup):
    tok, model_b, _, rows = setup
    model = AutoModelForTokenClassification.from_pretrained(model_b).eval()
    out = ModelBScorer(model, tok, torch.float32, batch_size=2)(rows, 0, len(rows))
    expected = []
    for text in TEXTS:
        expected.append(0.0)  # [CLS]
        for sentence in sentences_of(tok, text):
            ids = torch.tensor([tok(sentence)["input_ids"]])
            with torch.no_grad():
                expected.extend(torch.softmax(model(input_ids=ids).logits, -1)[0, 1:-1, 1].tolist())
        expected.append(0.0)  # [SEP]
    assert np.allclose(out, expected, atol=1e-5)
    whole = torch.tensor([rows.rows[0].tolist()])
    with torch.no_grad():
        as_document = torch.softmax(model(input_ids=whole).logits, -1)[0, :, 1].numpy()
    assert not np.allclose(out[: len(rows.rows[0])][1:-1], as_document[1:-1], atol=1e-3)  # context really differs


def test_entropy_scores_each_sentence_alone(setup):
    tok, _, model0, rows = setup
    model = AutoModelForSequenceClassification.from_pretrained(model0).eval()
    out = EntropyScorer(model, tok, torch.float32, batch_size=8, divergence="kl")(rows, 0, len(rows))
    expected = []
    for text in TEXTS:
        expected.append(0.0)
        for sentence in sentences_of(tok, text):
            ids = tok(sentence)["input_ids"]
            words = [-1] + list(range(len(ids) - 2)) + [-1]  # the tiny vocabulary holds these words whole
            expected.extend(task_entropy_scores(classifier_probs(model), ids, words, tok.mask_token_id, "kl")[1:-1])
        expected.append(0.0)
    assert np.allclose(out, expected, rtol=1e-4, atol=1e-7) and (out > 0).sum() > 10


def test_score_corpus_resumes_and_cleans_up(setup, tmp_path, monkeypatch):
    import datamodules.scoring_run as scoring_run

    tok, model_b, _, rows = setup
    rows.directory = str(tmp_path)
    spec = resolve_scorer("selective", {"model": model_b, "precision": "fp32"})
    monkeypatch.setattr(scoring_run.run_in_chunks, "__defaults__", (None, "scoring", 1))  # a chunk per row
    full = score_corpus(spec, tok, rows)
    calls = []
    real = ModelBScorer.__call__

    def dies_on_the_second_row(self, arrays, lo, hi):
        calls.append(lo)
        if lo == 1 and len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, arrays, lo, hi)

    monkeypatch.setattr(ModelBScorer, "__call__", dies_on_the_second_row)
    with pytest.raises(KeyboardInterrupt):
        score_corpus(spec, tok, rows)
    calls.clear()
    again = score_corpus(spec, tok, rows)
    assert calls == [1, 2] and np.array_equal(again, full)  # row 0 came from its chunk file
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".parts")] == []
