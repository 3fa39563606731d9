"""Knowledge fusion: both sites change the logits and get gradients, the embedding path is
exactly the plain encoder when nothing is injected, model/data mismatches are errors, the
export keeps the fusion weights, and a VADER-fed model trains through the Trainer."""

from __future__ import annotations

import json
import os

import pytest
import pytorch_lightning as pl
import torch

from bertlab.core.errors import BertlabError
from datamodules.classification import ClassificationDataModule
from datamodules.knowledge_vectors import Knowledge
from lightning_modules.classifier import TextClassifier
from lightning_modules.knowledge import AfterEncoderFusion, EmbeddingFusion, build_fusion
from tests.conftest import quiet_trainer
from tests.dm_args import grouped

D = 3
FUSIONS = ["after_encoder", "embedding"]


@pytest.fixture
def batch(dm):
    b = next(iter(dm.val_dataloader()))
    b["knowledge"] = torch.randn(len(b["labels"]), D, generator=torch.Generator().manual_seed(1))
    return b


def classifier(tiny_bert_dir, dm, **kwargs) -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier(tiny_bert_dir, num_labels=dm.num_labels, id2label=dm.id2label, **kwargs)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_knowledge_changes_the_logits(tiny_bert_dir, dm, batch, fusion):
    model = classifier(tiny_bert_dir, dm, knowledge_dim=D, knowledge_fusion=fusion).eval()
    with torch.no_grad():
        a = model(batch)
        b = model({**batch, "knowledge": batch["knowledge"] + 1.0})
    assert a.shape == (len(batch["labels"]), 2)
    assert (a - b).abs().max() > 1e-6


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_weights_and_the_vectors_receive_gradients(tiny_bert_dir, dm, batch, fusion):
    model = classifier(tiny_bert_dir, dm, knowledge_dim=D, knowledge_fusion=fusion)
    k = batch["knowledge"].clone().requires_grad_()
    model._shared_step({**batch, "knowledge": k}, "train").backward()
    assert k.grad is not None and k.grad.abs().sum() > 0
    if fusion == "embedding":
        fusion_grads = [p.grad for p in model.fusion.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in fusion_grads)
        assert model.classifier.in_features == model.head.out_dim
    else:
        assert model.classifier.in_features == model.head.out_dim + D
        assert model.classifier.weight.grad[:, -D:].abs().sum() > 0  # the classifier's knowledge columns


def test_embedding_fusion_adds_to_the_first_token_only():
    fusion = EmbeddingFusion(D, 4)
    embeds, k = torch.randn(2, 5, 4), torch.randn(2, D)
    out = fusion(embeds, k)
    torch.testing.assert_close(out[:, 1:], embeds[:, 1:])
    torch.testing.assert_close(out[:, 0], embeds[:, 0] + fusion.proj(k))


def test_after_encoder_fusion_concatenates():
    out = AfterEncoderFusion(D, 4)(torch.ones(2, 4), torch.zeros(2, D))
    torch.testing.assert_close(out, torch.cat([torch.ones(2, 4), torch.zeros(2, D)], -1))


def test_embedding_path_with_nothing_injected_is_the_plain_encoder(tiny_bert_dir, dm, batch):
    model = classifier(tiny_bert_dir, dm, knowledge_dim=D, knowledge_fusion="embedding").eval()
    plain = classifier(tiny_bert_dir, dm).eval()
    with torch.no_grad():
        model.fusion.proj.weight.zero_()  # W·k + b = 0
        torch.testing.assert_close(
            model.encode(batch, model.knowledge(batch)), plain.encode(batch), atol=1e-6, rtol=1e-6
        )


def test_fusion_argument_errors():
    with pytest.raises(BertlabError, match="unknown knowledge_fusion 'late'"):
        build_fusion("late", 4, 8)
    with pytest.raises(BertlabError, match="needs knowledge_dim >= 1"):
        build_fusion("embedding", 0, 8)
    with pytest.raises(BertlabError, match="knowledge_fusion is null"):
        build_fusion(None, 4, 8)
    assert build_fusion(None, 0, 8) is None


def test_model_and_data_disagreeing_about_knowledge_is_an_error(tiny_bert_dir, dm, batch):
    fused = classifier(tiny_bert_dir, dm, knowledge_dim=D, knowledge_fusion="after_encoder")
    plain = classifier(tiny_bert_dir, dm)
    no_knowledge = {k: v for k, v in batch.items() if k != "knowledge"}
    with pytest.raises(BertlabError, match="needs knowledge vectors"):
        fused(no_knowledge)
    with pytest.raises(BertlabError, match="width 5 .* knowledge_dim is 3"):
        fused({**batch, "knowledge": torch.zeros(len(batch["labels"]), 5)})
    with pytest.raises(BertlabError, match="no knowledge_fusion"):
        plain(batch)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_export_with_fusion_is_custom_code_and_keeps_the_fusion_weights(tiny_bert_dir, dm, tmp_path, fusion):
    from safetensors.torch import load_file

    model = classifier(tiny_bert_dir, dm, knowledge_dim=D, knowledge_fusion=fusion)
    out = str(tmp_path / "export")
    assert model.export_pretrained(out) is False
    assert os.path.isfile(os.path.join(out, "modeling_bertlab.py"))
    saved = load_file(os.path.join(out, "model.safetensors"))
    torch.testing.assert_close(saved["classifier.weight"], model.classifier.weight.detach())
    assert {k[len("fusion.") :] for k in saved if k.startswith("fusion.")} == set(model.fusion.state_dict())
    if fusion == "embedding":
        torch.testing.assert_close(saved["fusion.proj.weight"], model.fusion.proj.weight.detach())
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["bertlab"]["knowledge_fusion"] == fusion and config["bertlab"]["knowledge_dim"] == D
    assert config["auto_map"] == {
        "AutoModelForSequenceClassification": "modeling_bertlab.BertlabForSequenceClassification"
    }


def test_plain_cls_export_stays_native(tiny_bert_dir, dm, tmp_path):
    assert classifier(tiny_bert_dir, dm).export_pretrained(str(tmp_path / "export")) is True


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_vader_fed_model_trains_and_predicts(tiny_bert_dir, tiny_csvs, tmp_path, fusion):
    args = dict(
        tokenizer=tiny_bert_dir,
        train_file=tiny_csvs["train"],
        val_file=tiny_csvs["val"],
        batch_size=16,
        max_length=32,
        cache_dir=str(tmp_path / "cache"),
        knowledge=Knowledge(provider="vader", dim=4),
    )
    data = ClassificationDataModule(**grouped(**args))
    pl.seed_everything(0)
    model = TextClassifier(
        tiny_bert_dir,
        num_labels=data.num_labels,
        id2label=data.id2label,
        knowledge_dim=4,
        knowledge_fusion=fusion,
        lr=1e-3,
    )
    before = {k: v.clone() for k, v in model.fusion.state_dict().items()} if fusion == "embedding" else None
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1)
    trainer.fit(model, datamodule=data)
    assert data.datasets["train"].extras["knowledge"].shape == (len(data.frames["train"]), 4)
    preds = trainer.predict(model, datamodule=ClassificationDataModule(**grouped(**args, predict_split="val")))
    probs = torch.cat([p["probs"] for p in preds])
    assert probs.shape == (len(data.frames["val"]), 2) and torch.isfinite(probs).all()
    if before is not None:
        assert not torch.equal(before["proj.weight"], model.fusion.proj.weight)
