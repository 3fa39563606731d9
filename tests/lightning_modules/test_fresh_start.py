"""``lightning_modules.fresh_start``: head warm-up freezes exactly the pretrained weights, re-initialising
changes exactly the top k layers, and the lr multiplier reaches only the new parameters."""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bertlab.core.errors import BertlabError
from lightning_modules import masked_lm
from lightning_modules.classifier import TextClassifier
from lightning_modules.fresh_start import FreshStart
from lightning_modules.heads import ClsHead, MeanHead
from lightning_modules.masked_lm import MaskedLM
from tests.conftest import quiet_trainer
from tests.lightning_modules.test_masked_lm import masked_batch, tiny_mlm_dir


class Snapshot(pl.Callback):
    """The module's state just before optimizer step ``at`` (i.e. after ``at`` steps)."""

    def __init__(self, at: int):
        self.at, self.state = at, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at:
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(module, batches, steps: int, at: int) -> tuple[dict, dict, dict]:
    """(state before, state after ``at`` steps, state after ``steps``)."""
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    snap = Snapshot(at)
    quiet_trainer(max_steps=steps, callbacks=[snap]).fit(module, DataLoader(batches, batch_size=None))
    after = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return before, snap.state, after


def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])}


def test_mlm_warmup_trains_the_new_head_and_the_tied_decoder_only(tiny_bert_dir, caplog):
    pl.seed_everything(0)
    module = MaskedLM(model_name_or_path=tiny_bert_dir, lr=3e-3, warmup_steps=0, fresh=FreshStart(warmup_steps=3))
    batches = [masked_batch(module.model.config.vocab_size, 0, seed=s) for s in range(6)]
    with caplog.at_level(logging.INFO):
        before, warm, after = fit(module, batches, steps=6, at=3)
    during = changed(before, warm)
    word = "model.bert.embeddings.word_embeddings.weight"
    head = {k for k in before if k.startswith("model.cls.predictions.") and k != "model.cls.predictions.decoder.weight"}
    assert during == head | {word, "model.cls.predictions.decoder.weight"}  # tied: the same tensor, two keys
    later = changed(warm, after)
    assert "model.bert.encoder.layer.0.attention.self.query.weight" in later
    assert any(k.startswith("model.bert.encoder.layer.1.") for k in later)
    hidden, vocab = module.model.config.hidden_size, module.model.config.vocab_size
    new = hidden * hidden + hidden + 2 * hidden + vocab  # transform dense, its LayerNorm, the output bias
    assert f"{new:,} newly initialised parameters in 5 tensors" in caplog.text
    assert "head warm-up: 3 steps" in caplog.text


def test_mlm_default_warmup_only_for_a_new_head(tiny_bert_dir, tmp_path):
    assert MaskedLM(model_name_or_path=tiny_bert_dir).fresh.warmup_steps == masked_lm.HEAD_WARMUP_STEPS
    assert MaskedLM(model_name_or_path=tiny_mlm_dir("roberta", tmp_path)).fresh.warmup_steps == 0
    assert MaskedLM(model_name_or_path=tiny_mlm_dir("roberta", tmp_path)).fresh_names == set()
    with pytest.raises(BertlabError, match="MaskedLM does not re-initialise layers"):
        MaskedLM(model_name_or_path=tiny_bert_dir, fresh=FreshStart(reinit_layers=1))


def classifier_batches(module, n: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    vocab = module.encoder.config.vocab_size
    return [
        {
            "input_ids": torch.randint(5, vocab, (4, 10), generator=g),
            "attention_mask": torch.ones(4, 10, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=g),
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("head", [ClsHead, MeanHead])
def test_classifier_warmup_leaves_the_encoder_untouched(tiny_bert_dir, head):
    pl.seed_everything(0)
    module = TextClassifier(tiny_bert_dir, head=head, lr=1e-2, warmup_ratio=0.0, fresh={"warmup_steps": 2})
    before, warm, after = fit(module, classifier_batches(module, 4), steps=4, at=2)
    during = changed(before, warm)
    assert during and not any(k.startswith("encoder.") for k in during)
    assert {"classifier.weight", "classifier.bias"} <= during
    assert any(k.startswith("encoder.encoder.layer.") for k in changed(warm, after))


def test_reinit_changes_exactly_the_top_layers(tiny_bert_dir):
    torch.manual_seed(0)
    plain = TextClassifier(tiny_bert_dir).encoder.state_dict()
    torch.manual_seed(0)
    reinit = TextClassifier(tiny_bert_dir, fresh=FreshStart(reinit_layers=1)).encoder.state_dict()
    differ = {k for k in plain if not torch.equal(plain[k], reinit[k])}
    top = {k for k in plain if k.startswith("encoder.layer.1.")}
    assert differ and differ <= top  # the top layer of 2, nothing else
    assert {k for k in top if k.endswith("dense.weight") or k.endswith("query.weight")} <= differ
    with pytest.raises(BertlabError, match="exceeds the encoder's 2 layers"):
        TextClassifier(tiny_bert_dir, fresh=FreshStart(reinit_layers=3))


def test_lr_multiplier_reaches_only_new_parameters(tiny_bert_dir):
    module = TextClassifier(tiny_bert_dir, head=MeanHead, lr=1e-3, fresh=FreshStart(lr_multiplier=10.0))
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(module.named_parameters())
    assert module.fresh_names == {"classifier.weight", "classifier.bias"}  # the mean head has no weights
    for name, p in named.items():
        assert lr_of[id(p)] == pytest.approx(1e-2 if name in module.fresh_names else 1e-3), name


@pytest.mark.parametrize("bad", [{"warmup_steps": -1}, {"lr_multiplier": 0.0}, {"reinit_layers": -2}])
def test_bad_fresh_start_values(bad):
    with pytest.raises(BertlabError, match="fresh\\."):
        FreshStart(**bad)
