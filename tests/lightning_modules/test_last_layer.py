"""``lightning_modules.last_layer``: the last layer at the read positions equals the full layer, gradients too."""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules.last_layer import encode_at, encode_first_token, sparse_last_layer


def _encoder(tiny_bert_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_bert_dir)


def _inputs():
    torch.manual_seed(0)
    ids = torch.randint(5, 150, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return ids, mask


def test_first_token_hidden_states_equal_the_full_encoder(tiny_bert_dir):
    encoder = _encoder(tiny_bert_dir).eval()
    ids, mask = _inputs()
    full = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    ours = encode_first_token(encoder, input_ids=ids, attention_mask=mask)
    assert len(ours) == len(full) and ours[-1].shape == (3, 1, full[-1].shape[-1])
    for a, b in zip(ours[:-1], full[:-1]):
        torch.testing.assert_close(a[mask.bool()], b[mask.bool()])
    torch.testing.assert_close(ours[-1][:, 0], full[-1][:, 0], atol=1e-6, rtol=1e-5)
    assert len(encoder.encoder.layer) == encoder.config.num_hidden_layers  # the layer list is put back


def test_gradients_equal_the_full_encoder(tiny_bert_dir):
    ids, mask = _inputs()
    grads = []
    for first_only in (False, True):
        encoder = _encoder(tiny_bert_dir).eval()  # eval: no dropout, so both paths compute the same function
        if first_only:
            cls = encode_first_token(encoder, input_ids=ids, attention_mask=mask)[-1][:, 0]
        else:
            cls = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        cls.pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = grads[0][name].abs().max().item()
        assert (grads[1][name] - grads[0][name]).abs().max().item() <= 1e-5 * max(scale, 1.0), name


def test_classifier_uses_it_for_the_cls_head_only(tiny_bert_dir):
    from lightning_modules.classifier import TextClassifier
    from lightning_modules.heads import MeanHead

    ids, mask = _inputs()
    batch = {"input_ids": ids, "attention_mask": mask}
    cls = TextClassifier(tiny_bert_dir, num_labels=2).eval()
    mean = TextClassifier(tiny_bert_dir, num_labels=2, head=MeanHead).eval()
    assert cls.first_token_only and not mean.first_token_only
    full = cls.head(cls.encoder(**batch, output_hidden_states=True).hidden_states, mask)
    torch.testing.assert_close(cls.encode(batch), full, atol=1e-6, rtol=1e-5)


def test_other_layer_shapes_are_not_claimed():
    assert not sparse_last_layer(nn.Linear(2, 2))


def test_a_one_layer_encoder_has_no_layer_below_the_last(tmp_path, tiny_texts):
    from transformers import AutoModel

    from tests.conftest import build_tiny_bert

    one = AutoModel.from_pretrained(build_tiny_bert(str(tmp_path / "one"), tiny_texts, layers=1)).eval()
    ids, mask = _inputs()
    full = one(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    ours = encode_first_token(one, input_ids=ids, attention_mask=mask)
    assert len(ours) == len(full) == 2
    torch.testing.assert_close(ours[-1][:, 0], full[-1][:, 0], atol=1e-6, rtol=1e-5)


def _read_mask(mask):
    torch.manual_seed(1)
    read = (torch.rand(mask.shape) < 0.3) & mask.bool()
    read[0, :] = False  # a row with nothing to read
    read[1, 0] = read[1, 5] = True
    return read


def test_masked_positions_equal_the_full_encoder_rows(tiny_bert_dir):
    encoder = _encoder(tiny_bert_dir).eval()
    ids, mask = _inputs()
    read = _read_mask(mask)
    full = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[read]
    ours = encode_at(encoder, read, input_ids=ids, attention_mask=mask)
    assert ours.shape == full.shape and full.shape[0] == int(read.sum()) > 2
    torch.testing.assert_close(ours, full, atol=1e-6, rtol=1e-5)
    assert len(encoder.encoder.layer) == encoder.config.num_hidden_layers


def test_nothing_to_read_gives_no_rows_but_a_graph(tiny_bert_dir):
    encoder = _encoder(tiny_bert_dir).eval()
    ids, mask = _inputs()
    ours = encode_at(encoder, torch.zeros_like(mask, dtype=torch.bool), input_ids=ids, attention_mask=mask)
    assert ours.shape == (0, encoder.config.hidden_size)
    ours.sum().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is None or g.abs().max().item() == 0.0 for g in grads) and any(g is not None for g in grads)


def test_mlm_loss_and_gradients_equal_hf_full_forward(tiny_bert_dir):
    from transformers import AutoModelForMaskedLM

    from lightning_modules.mlm_objective import masked_lm_loss, mlm_head_fn, sparse_mlm_logits

    ids, mask = _inputs()
    labels = torch.where(_read_mask(mask), ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    losses, grads = [], []
    for sparse in (False, True):
        torch.manual_seed(0)  # the tiny checkpoint has no MLM head: the same random head for both
        model = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).eval()
        if sparse:
            loss = masked_lm_loss(*sparse_mlm_logits(model, mlm_head_fn(model), batch))
        else:
            loss = model(**batch).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert abs(losses[0] - losses[1]) < 1e-5 and losses[0] > 1.0
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = grads[0][name].abs().max().item()
        assert (grads[1][name] - grads[0][name]).abs().max().item() <= 1e-5 * max(scale, 1.0), name
