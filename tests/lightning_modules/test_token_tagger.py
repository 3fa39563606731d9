"""Model_b end to end on tiny models: train on buffer-rule labels, report token F1, export, score a corpus once."""

from __future__ import annotations

import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoModelForTokenClassification

from bertlab.core.errors import BertlabError
from callbacks.hf_export import atomic_export
from datamodules.batching import Loader
from datamodules.maskers import SelectiveMasker
from datamodules.mlm import MLMDataModule, Scorer
from datamodules.splits import Splits
from datamodules.token_labels import TokenLabelDataModule
from lightning_modules.token_tagger import TokenTagger
from tests.selective_models import save_classifier, save_token_tagger


@pytest.fixture(scope="module")
def model0(tmp_path_factory, tiny_bert_dir, tiny_csvs):
    return save_classifier(
        str(tmp_path_factory.mktemp("model0")), tiny_bert_dir, train_csv=tiny_csvs["train"], steps=60
    )


def test_model_b_trains_reports_token_f1_and_exports(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    task = Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"])
    dm = TokenLabelDataModule(
        tiny_bert_dir, task=task, model0=model0, max_length=32, delta=0.05, cache_dir=str(tmp_path / "c")
    )
    module = TokenTagger(tiny_bert_dir, lr=3e-3, important_weight=2.0)
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, dm)
    (metrics,) = trainer.test(module, dm, verbose=False)
    assert {"test/f1", "test/precision", "test/recall", "test/acc", "test/loss"} <= set(metrics)
    assert metrics["test/f1"] > 0.3  # important tokens are learnable here: they are the sentiment words
    out = str(tmp_path / "model_b")
    atomic_export(module, dm.tokenizer, out, {})
    loaded = AutoModelForTokenClassification.from_pretrained(out)
    assert loaded.config.id2label == {0: "other", 1: "important"}


def _mlm(tiny_bert_dir, tiny_csvs, cache, scorer, masker="selective"):
    """``masker`` names the recipe: both use ``SelectiveMasker``; a scorer without a kind gets the recipe's."""
    if scorer is not None:
        scorer = Scorer(**{"kind": "model_b" if masker == "selective" else "entropy", **scorer})
    return MLMDataModule(
        tokenizer=tiny_bert_dir,
        corpus=[f"{tiny_csvs['test']}:text"],
        task=Splits(train_file=tiny_csvs["train"], val_file=tiny_csvs["val"]),
        masker=SelectiveMasker,
        scorer=scorer,
        max_length=32,
        loader=Loader(batch_size=8),
        cache_dir=str(cache),
    )


def test_model_b_scores_are_cached_beside_the_tokens(tiny_bert_dir, tiny_csvs, tmp_path, monkeypatch):
    model_b = save_token_tagger(str(tmp_path / "model_b"), tiny_bert_dir)
    dm = _mlm(tiny_bert_dir, tiny_csvs, tmp_path / "c", {"kind": "model_b", "model": model_b})
    dm.setup("fit")
    assert dm.scores_built_now is True
    files = [f for root, _, fs in os.walk(tmp_path / "c" / "tokens") for f in fs if f.startswith("scores-")]
    assert len(files) == 1
    item = dm.datasets["train"][0]
    assert item["scores"].shape == item["input_ids"].shape and item["scores"][0] == 0.0
    assert 0 < item["scores"][1] < 1
    batch = next(iter(dm.train_dataloader()))
    assert (batch["labels"] != -100).any()

    import datamodules.mlm as mlm

    monkeypatch.setattr(mlm, "score_corpus", lambda *a, **k: pytest.fail("Model_b ran again"))
    again = _mlm(tiny_bert_dir, tiny_csvs, tmp_path / "c", {"kind": "model_b", "model": model_b})
    again.setup("fit")
    assert again.scores_built_now is False
    assert np.array_equal(again.datasets["train"][3]["scores"], dm.datasets["train"][3]["scores"])
    monkeypatch.undo()
    # a retrained Model_b at the same path is a new key
    save_token_tagger(model_b, tiny_bert_dir, seed=1)
    third = _mlm(tiny_bert_dir, tiny_csvs, tmp_path / "c", {"kind": "model_b", "model": model_b})
    third.setup("fit")
    assert third.scores_built_now is True


def test_entropy_scorer_on_the_corpus(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    # fp32: the tiny random Model_0 moves its prediction by less than bf16 resolves (with `auto` on a bf16
    # CPU every score of this sentence rounds to exactly 0)
    scorer = {"model": model0, "divergence": "kl", "precision": "fp32"}
    dm = _mlm(tiny_bert_dir, tiny_csvs, tmp_path / "c", scorer, masker="entropy")
    dm.setup("fit")
    rows = [dm.datasets["train"][i]["scores"] for i in range(5)]
    assert all(s[0] == 0.0 and s[-1] == 0.0 for s in rows) and any((s[1:-1] > 0).any() for s in rows)


def test_bad_scorers(tiny_bert_dir, tiny_csvs, model0, tmp_path):
    with pytest.raises(BertlabError, match="not a 2-label token classifier"):
        _mlm(tiny_bert_dir, tiny_csvs, tmp_path, {"kind": "model_b", "model": model0}).setup("fit")
    with pytest.raises(BertlabError, match="not a sequence classifier"):
        _mlm(tiny_bert_dir, tiny_csvs, tmp_path, {"model": tiny_bert_dir}, masker="entropy").setup("fit")
    three = save_classifier(str(tmp_path / "three"), tiny_bert_dir, labels=("a", "b", "c"))
    with pytest.raises(BertlabError, match="but the task's labels are"):
        _mlm(tiny_bert_dir, tiny_csvs, tmp_path, {"model": three}, masker="entropy").setup("fit")
    with pytest.raises(BertlabError, match=r"needs `scorer: \{kind: model_b \| entropy, model: DIR\}`"):
        _ = _mlm(tiny_bert_dir, tiny_csvs, tmp_path, None).masker
    with pytest.raises(BertlabError, match="unknown kind 'gradient'"):
        _mlm(tiny_bert_dir, tiny_csvs, tmp_path, {"kind": "gradient", "model": model0})


def test_nothing_important_on_the_corpus(tiny_bert_dir, tiny_csvs, tmp_path):
    model_b = save_token_tagger(str(tmp_path / "model_b"), tiny_bert_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_b)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, -5.0]))  # P(important) ≈ 0.007 everywhere
    model.save_pretrained(model_b)
    with pytest.raises(BertlabError, match=r"no token of the MLM corpus gets P\(important\) > 0.5"):
        _mlm(tiny_bert_dir, tiny_csvs, tmp_path / "c", {"kind": "model_b", "model": model_b}).setup("fit")
