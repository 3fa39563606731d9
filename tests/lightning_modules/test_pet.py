"""``PET``: verbalizer checks, the loss against full HF logits, a short fit, and the hand-over to ``TextClassifier``."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from bertlab.core.errors import BertlabError
from datamodules.maskers import DynamicMasker
from datamodules.pet import PETDataModule
from lightning_modules.pet import PET, pet_loss
from tests.conftest import quiet_trainer
from tests.dm_args import grouped

ID2LABEL = {0: "neg", 1: "pos"}
VERBALIZER = {"pos": "great", "neg": "awful"}
PATTERNS = ["{text} It was [MASK].", "Review: {text} All in all, [MASK]!"]


@pytest.fixture
def dm(tiny_bert_dir, tiny_csvs, tmp_path):
    return PETDataModule(
        **grouped(
            tokenizer=tiny_bert_dir,
            train_file=tiny_csvs["train"],
            val_file=tiny_csvs["val"],
            predict_file=tiny_csvs["test"],
            batch_size=8,
            max_length=32,
            cache_dir=str(tmp_path / "cache"),
            patterns=PATTERNS,
            masker=DynamicMasker,
        )
    )


def pet(path, **kw):
    return PET(model_name_or_path=path, **{"verbalizer": VERBALIZER, "num_labels": 2, "id2label": ID2LABEL, **kw})


def test_multi_token_verbalizer_word(tiny_bert_dir):
    import re

    from transformers import AutoTokenizer

    # the tiny vocabulary's merges vary between runs (trainer ties), so the pieces are read, not written out
    pieces = AutoTokenizer.from_pretrained(tiny_bert_dir).tokenize(" greatawful")
    with pytest.raises(
        BertlabError, match=re.escape(f"multi-token verbalizer word 'greatawful' (label 'pos') tokenises to {pieces}")
    ):
        pet(tiny_bert_dir, verbalizer={"pos": "greatawful", "neg": "awful"})
    with pytest.raises(BertlabError, match="multi-token verbalizer word 'neg'"):
        pet(tiny_bert_dir, verbalizer=None)  # the default verbalizer is the label names


def test_verbalizer_must_cover_every_label(tiny_bert_dir):
    with pytest.raises(BertlabError, match=r"no word for label\(s\) \['neg'\]"):
        pet(tiny_bert_dir, verbalizer={"pos": "great"})
    with pytest.raises(BertlabError, match="not in the vocabulary"):
        pet(tiny_bert_dir, verbalizer={"pos": "great", "neg": "zebra"})
    with pytest.raises(BertlabError, match="must differ"):
        pet(tiny_bert_dir, verbalizer={"pos": "great", "neg": "great"})
    with pytest.raises(BertlabError, match="id2label"):
        pet(tiny_bert_dir, id2label=None)


def test_loss_equals_hand_computation_from_full_logits(tiny_bert_dir, dm):
    from transformers import AutoTokenizer

    module = pet(tiny_bert_dir).eval()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        ours = pet_loss(module.pattern_logits(batch), batch["labels"])
        full = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B·P, T, V]
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    words = [tok.convert_tokens_to_ids(VERBALIZER[ID2LABEL[i]]) for i in range(2)]
    rows = torch.arange(full.shape[0])
    at_mask = full[rows, (batch["input_ids"] == tok.mask_token_id).int().argmax(1)][:, words]  # [B·P, C]
    b = batch["labels"].shape[0]
    per_pattern = [torch.nn.functional.cross_entropy(at_mask.view(b, 2, 2)[:, p], batch["labels"]) for p in range(2)]
    assert torch.allclose(ours, sum(per_pattern) / 2, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(module(batch), at_mask.view(b, 2, 2).mean(1), atol=1e-5)


def test_mlm_weight_needs_mlm_inputs(tiny_bert_dir, dm):
    dm.make_masker = None
    dm.setup("fit")
    module = pet(tiny_bert_dir, mlm_weight=1e-4)
    with pytest.raises(BertlabError, match="masker"):
        module._shared_step(next(iter(dm.train_dataloader())), "train")


def test_fit_predict_and_export_to_classifier(tiny_bert_dir, dm, tmp_path):
    from lightning_modules.classifier import TextClassifier

    pl.seed_everything(0)
    module = pet(tiny_bert_dir, mlm_weight=0.1, lr=1e-3)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=2, limit_predict_batches=1)
    trainer.fit(module, datamodule=dm)
    for key in ("train/loss", "train/mlm_loss", "val/loss", "val/acc", "val/f1"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    [out] = trainer.predict(module, datamodule=dm)  # predict batches carry no labels
    assert (
        out["probs"].shape == (8, 2) and torch.allclose(out["probs"].sum(1), torch.ones(8)) and out["idx"].shape == (8,)
    )

    assert module.export_pretrained(str(tmp_path / "export")) is True
    clf = TextClassifier(model_name_or_path=str(tmp_path / "export"), num_labels=2, id2label=ID2LABEL)
    ours = module.model.base_model.state_dict()
    theirs = clf.encoder.state_dict()
    assert ours and all(torch.equal(v, theirs[k]) for k, v in ours.items())
