"""``MaskedLM``: the sparse-head loss is HF's loss, on BERT, RoBERTa and DistilBERT.

Batches are built by hand (``labels`` -100 where nothing is predicted), so these tests do not
depend on the maskers. Models run in eval mode so that dropout does not differ between the
two computations.
"""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bertlab.core.errors import BertlabError
from lightning_modules.masked_lm import MaskedLM
from lightning_modules.mlm_model import ScratchBert
from lightning_modules.mlm_objective import MLMStats, masked_lm_loss, mlm_head_fn
from lightning_modules.param_groups import build_param_groups
from tests.conftest import quiet_trainer


def tiny_mlm_dir(kind: str, root) -> str:
    from transformers import DistilBertConfig, DistilBertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    if kind == "roberta":
        model = RobertaForMaskedLM(
            RobertaConfig(
                vocab_size=60,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=40,
                pad_token_id=1,
            )
        )
    else:
        model = DistilBertForMaskedLM(
            DistilBertConfig(vocab_size=60, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=40)
        )
    path = str(root / kind)
    model.save_pretrained(path)
    return path


def masked_batch(vocab: int, pad_id: int, seed: int = 0, batch: int = 3, width: int = 12, p: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, width), generator=g)
    lengths = torch.tensor([width, width - 3, width - 6][:batch])
    attn = (torch.arange(width) < lengths[:, None]).long()
    ids = torch.where(attn.bool(), ids, pad_id)
    chosen = (torch.rand(batch, width, generator=g) < p) & attn.bool()
    chosen[0, 1] = True  # at least one masked token
    return {"input_ids": ids, "attention_mask": attn, "labels": torch.where(chosen, ids, -100)}


@pytest.fixture(params=["bert", "roberta", "distilbert"])
def module(request, tiny_bert_dir, tmp_path):
    path = tiny_bert_dir if request.param == "bert" else tiny_mlm_dir(request.param, tmp_path)
    return MaskedLM(model_name_or_path=path).eval()


def test_sparse_loss_equals_hf_loss(module):
    config = module.model.config
    batch = masked_batch(config.vocab_size, config.pad_token_id)
    with torch.no_grad():
        ours = masked_lm_loss(*module(batch))
        theirs = module.model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)


def test_gradients_equal_hf_gradients(tiny_bert_dir):
    module = MaskedLM(model_name_or_path=tiny_bert_dir).eval()
    batch = masked_batch(module.model.config.vocab_size, 0, seed=1)
    masked_lm_loss(*module(batch)).backward()
    ours = {n: p.grad.clone() for n, p in module.model.named_parameters()}
    module.model.zero_grad()
    module.model(**batch).loss.backward()
    for name, param in module.model.named_parameters():
        assert torch.allclose(ours[name], param.grad, atol=1e-6), name


def test_no_masked_tokens_gives_zero_loss_and_zero_grads(tiny_bert_dir):
    """Decision: loss 0 (not NaN, not skipped), still attached to every parameter so DDP sees a full graph."""
    module = MaskedLM(model_name_or_path=tiny_bert_dir).eval()
    batch = masked_batch(module.model.config.vocab_size, 0)
    batch["labels"].fill_(-100)
    logits, targets = module(batch)
    loss = masked_lm_loss(logits, targets)
    assert logits.shape[0] == 0 and loss.item() == 0.0
    loss.backward()
    grads = [p.grad for p in module.model.parameters()]
    assert all(g is not None and torch.all(g == 0) for g in grads)
    stats = MLMStats()
    stats.update(logits, targets)
    assert all(math.isfinite(v.item()) for v in stats.compute().values())


def test_head_fn_rejects_unknown_architecture():
    with pytest.raises(BertlabError, match="no masked-LM head"):
        mlm_head_fn(torch.nn.Linear(2, 2))


def test_tied_decoder_is_listed_once(tiny_bert_dir):
    module = MaskedLM(model_name_or_path=tiny_bert_dir)
    decoder = module.model.cls.predictions.decoder
    assert decoder.weight is module.model.bert.embeddings.word_embeddings.weight  # tied
    assert decoder.bias is module.model.cls.predictions.bias
    params = [p for g in build_param_groups(module, 1e-4, 0.01, encoder_attr="model") for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len({id(p) for p in module.parameters()})
    assert not any(k.startswith("head.") for k in module.state_dict())


def test_export_loads_as_encoder_without_warnings(tiny_bert_dir, tmp_path, capsys, caplog):
    from transformers import AutoModel

    from bertlab.core.hf_loading import from_pretrained

    module = MaskedLM(model_name_or_path=tiny_bert_dir)
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(0.01)  # so a freshly initialised encoder could not pass
    assert module.export_pretrained(str(tmp_path / "export")) is True
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        encoder, missing = from_pretrained(AutoModel, str(tmp_path / "export"))
    out = capsys.readouterr()
    assert out.out == "" and out.err == "" and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(k.startswith("pooler.") for k in missing)  # MLM-only BERT has no pooler; the classifier drops it anyway
    ours, theirs = module.model.base_model.state_dict(), encoder.state_dict()
    assert set(ours) == {k for k in theirs if not k.startswith("pooler.")}
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k


def test_from_scratch_uses_the_tokenizer_vocabulary(tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tok.save_pretrained(str(tmp_path / "tok"))  # a tokenizer-only directory, as a trained char vocabulary
    spec = ScratchBert(
        tokenizer=str(tmp_path / "tok"),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    module = MaskedLM(model_name_or_path=None, from_scratch=spec)
    config = module.model.config
    assert config.vocab_size == len(tok) and config.pad_token_id == tok.pad_token_id and config.hidden_size == 16
    assert module.model.training
    assert torch.isfinite(masked_lm_loss(*module(masked_batch(config.vocab_size, 0))))


def test_bad_inputs(tiny_bert_dir):
    with pytest.raises(BertlabError, match="model_name_or_path"):
        MaskedLM(model_name_or_path=None)
    with pytest.raises(BertlabError, match="from_scratch: "):
        MaskedLM(from_scratch=ScratchBert(tokenizer=tiny_bert_dir, hidden_size=30, num_attention_heads=4))


def test_compile_targets_the_encoder(tiny_bert_dir):
    module = MaskedLM(model_name_or_path=tiny_bert_dir, compile=True)
    module.configure_model()
    assert module.model.base_model._compiled_call_impl is not None


def test_fit_lowers_loss_and_logs_token_weighted_val_metrics(tiny_bert_dir):
    pl.seed_everything(0)
    module = MaskedLM(model_name_or_path=tiny_bert_dir, lr=3e-3, warmup_steps=0)
    vocab = module.model.config.vocab_size
    train = masked_batch(vocab, 0, seed=3)
    empty = masked_batch(vocab, 0, seed=4)
    empty["labels"].fill_(-100)  # a step with nothing to predict must not break training
    val = [masked_batch(vocab, 0, seed=5, p=0.1), masked_batch(vocab, 0, seed=6, p=0.6)]

    module.eval()
    with torch.no_grad():
        before = masked_lm_loss(*module(train)).item()

    trainer = quiet_trainer(max_steps=12)
    trainer.fit(module, DataLoader([empty] + [train] * 11, batch_size=None))
    module.eval()
    with torch.no_grad():
        after = masked_lm_loss(*module(train)).item()
    assert after < before - 0.5, (before, after)

    metrics = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    ).validate(module, DataLoader(val, batch_size=None))[0]
    with torch.no_grad():
        pairs = [module(b) for b in val]
    expected = (
        sum(torch.nn.functional.cross_entropy(lg, t, reduction="sum") for lg, t in pairs)
        / sum(t.numel() for _, t in pairs)
    ).item()
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    correct = sum((lg.argmax(-1) == t).sum().item() for lg, t in pairs)
    assert metrics["val/mlm_acc"] == pytest.approx(correct / sum(t.numel() for _, t in pairs))


@pytest.mark.slow
def test_minilm_sparse_loss_equals_hf_loss():
    """The real MiniLM (no MLM head in the checkpoint: a fresh head, decoder tied to its embeddings),
    with token types."""
    from bertlab.core.models import load_tokenizer

    module = MaskedLM("minilm").eval()
    tok = load_tokenizer("minilm")
    enc = tok(
        ["the coffee was great and fresh", "a terrible stale snack, never again"], padding=True, return_tensors="pt"
    )
    ids = enc["input_ids"].clone()
    labels = torch.full_like(ids, -100)
    labels[:, 2:4] = ids[:, 2:4]
    ids[:, 2:4] = tok.mask_token_id
    batch = {
        "input_ids": ids,
        "attention_mask": enc["attention_mask"],
        "token_type_ids": enc["token_type_ids"],
        "labels": labels,
    }
    with torch.no_grad():
        assert torch.allclose(masked_lm_loss(*module(batch)), module.model(**batch).loss, atol=1e-5)


@pytest.mark.parametrize("max_epochs, warned", [(2, True), (-1, False), (6, False)])
def test_max_epochs_that_cut_the_step_budget_are_named(tiny_bert_dir, max_epochs, warned):
    module = MaskedLM(model_name_or_path=tiny_bert_dir, lr=1e-3, warmup_steps=0)
    batch = masked_batch(module.model.config.vocab_size, 0, seed=3)
    trainer = quiet_trainer(max_steps=12, max_epochs=max_epochs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, DataLoader([batch] * 2, batch_size=None))
    named = [str(w.message) for w in caught if "before max_steps" in str(w.message)]
    if warned:
        assert named == [
            "bertlab: MLM: max_epochs 2 ends training after 4 optimizer steps, before max_steps 12; set "
            "trainer.max_epochs -1 to train for the step budget"
        ]
        assert trainer.global_step == 4
    else:
        assert named == [] and trainer.global_step == 12


def test_a_scoring_maskers_stats_are_logged_token_weighted(tiny_bert_dir):
    module = MaskedLM(model_name_or_path=tiny_bert_dir, lr=1e-4, warmup_steps=0)
    vocab = module.model.config.vocab_size
    batches = []
    for seed, stats in ((7, [3.0, 20.0, 3.0]), (8, [6.0, 20.0, 2.0])):  # (masked, maskable, masked important)
        batches.append({**masked_batch(vocab, 0, seed=seed), "mask_stats": torch.tensor(stats, dtype=torch.float64)})
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    logged = trainer.logged_metrics
    assert logged["train/mask_rate_epoch"] == pytest.approx(9 / 40)
    assert logged["train/mask_important_fraction_epoch"] == pytest.approx(5 / 9)
