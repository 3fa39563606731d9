"""Corpus scoring for Chinese MLM (the snownlp pipelines' path): jieba words are the entropy scorer's units
and the selective masker keeps them whole."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from bertlab.core.errors import BertlabError
from datamodules.batching import Loader
from datamodules.corpus_scoring import resolve_scorer, scorer_fingerprint, scoring_dtype
from datamodules.file_array import FileArray
from datamodules.maskers import SelectiveMasker
from datamodules.mlm import MLMDataModule, Scorer
from datamodules.task_scorer import classifier_probs
from tests.conftest import build_tiny_bert
from tests.selective_models import save_classifier

ZH = ["我爱北京天安门", "今天天气很好", "这个产品质量太差了", "味道很好吃，下次还会再买", "快递很慢，包装也破了"] * 8


@pytest.fixture(scope="module")
def zh_bert(tmp_path_factory):
    """A tiny BERT whose vocabulary holds the characters (a character is [UNK], a special, to the English one)."""
    return build_tiny_bert(str(tmp_path_factory.mktemp("zh_bert")), ZH)


@pytest.fixture(scope="module")
def model0(tmp_path_factory, zh_bert):
    # a wider random init than BERT's 0.02, so that masking a word visibly moves the prediction
    return save_classifier(str(tmp_path_factory.mktemp("model0")), zh_bert, initializer_range=0.1)


def test_entropy_units_are_jieba_words_and_the_masker_keeps_them_whole(zh_bert, model0, tmp_path):
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(f"{t}{i}" for i, t in enumerate(ZH)) + "\n", encoding="utf-8")
    dm = MLMDataModule(
        tokenizer=zh_bert,
        corpus=[str(corpus)],
        chinese_whole_word=True,
        masker=partial(SelectiveMasker, mlm_probability=0.3, replace_prob=1.0, random_prob=0.0, keep_prob=0.0),
        scorer=Scorer(kind="entropy", model=model0, divergence="kl"),
        val_fraction=0,
        loader=Loader(batch_size=40),
        cache_dir=str(tmp_path / "cache"),
        max_unk_fraction=1,  # the digits that make each line unique are not in the tiny vocabulary
    )
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert isinstance(ds.scores, FileArray) and len(ds.scores) == len(ds.arrays.ids)  # flat, not per item
    for i in range(len(ds)):
        item = ds[i]
        words, scores = item["word_ids"], item["scores"]
        assert scores[words < 0].tolist() == [0.0] * int((words < 0).sum()) and (scores > 0).any()
        for w in np.unique(words[words >= 0]):
            assert len(set(scores[words == w].tolist())) == 1  # one score per jieba word
    batch = next(iter(dm.train_dataloader()))
    masked = batch["labels"] != -100
    assert masked.any()
    whole = 0
    items = {tuple(ds[i]["input_ids"].tolist()): ds[i]["word_ids"] for i in range(len(ds))}
    for row, sel in zip(batch["input_ids"], masked):
        n = int((row != dm.tokenizer.pad_token_id).sum())
        original = row[:n].clone()
        original[sel[:n]] = -1  # masked positions are [MASK] now; find the item by its unmasked length
        words = next(
            w for ids, w in items.items() if len(ids) == n and all(o in (-1, t) for o, t in zip(original, ids))
        )
        for w in np.unique(words[words >= 0]):
            chosen = sel[:n][torch.as_tensor(words == w)]
            assert chosen.all() or not chosen.any()
            whole += bool(chosen.all()) and len(chosen) > 1
    assert whole > 0  # words of several characters were masked, whole


def test_scorer_spec_defaults_and_errors():
    assert resolve_scorer("entropy", {"model": "m"}) == {
        "kind": "entropy",
        "model": "m",
        "divergence": "entropy",
        "batch_size": 64,
        "precision": "auto",
    }
    assert resolve_scorer("selective", {"model": "m"})["kind"] == "model_b"
    assert resolve_scorer("dynamic", None) is None
    with pytest.raises(BertlabError, match="unknown key"):
        resolve_scorer("selective", {"model": "m", "delta": 0.1})
    with pytest.raises(BertlabError, match="divergence must be one of entropy, kl"):
        resolve_scorer("entropy", {"model": "m", "divergence": "js"})
    with pytest.raises(BertlabError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        resolve_scorer("entropy", {"model": "m", "precision": "fp16"})


def test_scores_are_keyed_by_the_dtype_they_were_computed_in(model0, monkeypatch):
    import bertlab.core.hardware as hardware

    spec = resolve_scorer("entropy", {"model": model0})
    fp32 = scorer_fingerprint({**spec, "precision": "fp32"})
    assert scorer_fingerprint({**spec, "precision": "bf16"}) != fp32
    # auto follows the hardware; fp32 keys as they did before the option existed (old caches stay valid)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: (False, ""))
    assert scoring_dtype(spec) == torch.float32 and scorer_fingerprint(spec) == fp32
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: (True, "AVX512-BF16"))
    assert scoring_dtype(spec) == torch.bfloat16 and scorer_fingerprint(spec) != fp32
    # saliency needs gradients: always fp32, whatever precision says
    assert scoring_dtype(resolve_scorer("selective", {"kind": "saliency", "model": model0, "precision": "bf16"})) == (
        torch.float32
    )


def test_bf16_entropy_scores_rank_words_like_fp32(zh_bert, model0):
    from bertlab.core.models import load_tokenizer
    from datamodules.task_entropy import task_entropy_scores
    from datamodules.task_scorer import load_sequence_classifier

    tok, model = load_tokenizer(zh_bert), load_sequence_classifier(model0)
    ids = tok(ZH[3] + ZH[4])["input_ids"]
    words = [-1] + list(range(len(ids) - 2)) + [-1]
    fp32, bf16 = (
        task_entropy_scores(classifier_probs(model, dtype), ids, words, tok.mask_token_id, "kl")
        for dtype in (torch.float32, torch.bfloat16)
    )
    assert not np.array_equal(fp32, bf16)  # bf16 really ran
    assert np.corrcoef(fp32[1:-1], bf16[1:-1])[0, 1] > 0.9
    top = max(1, len(ids) // 5)
    assert len(set(np.argsort(-fp32)[:top]) & set(np.argsort(-bf16)[:top])) >= top - 1
