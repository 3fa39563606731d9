"""``lightning_modules.cpu_kernels``: the dropout's rate and gradient, and the attention against transformers' SDPA."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lightning_modules.cpu_kernels import ATTENTION, FastDropout, fast_dropout, keep_mask, use_cpu_kernels


def test_keep_mask_rate_is_one_minus_p_within_sampling_error():
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last 64-bit draw is cut
    for p in (0.1, 0.5, 0.02):
        rate = keep_mask(torch.Size([n]), p, torch.device("cpu")).double().mean().item()
        expected = 1 - round(p * 2**16) / 2**16
        assert abs(rate - expected) < 5 * math.sqrt(expected * (1 - expected) / n)


def test_keep_mask_is_independent_between_neighbours():
    """Four elements share a 64-bit draw; their keep decisions must still be uncorrelated."""
    torch.manual_seed(1)
    keep = keep_mask(torch.Size([400_000, 4]), 0.5, torch.device("cpu")).double()
    corr = torch.corrcoef(keep.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.01


def test_fast_dropout_scales_survivors_and_routes_gradient_through_them():
    torch.manual_seed(2)
    x = torch.randn(256, 64, requires_grad=True)
    y = fast_dropout(x, 0.25)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, torch.where(kept, 2 * x.detach() / 0.75**2, torch.zeros_like(x)))


def test_fast_dropout_is_identity_in_eval_and_seeded_in_training():
    layer = FastDropout(0.1)
    x = torch.randn(32, 8)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), a)
    assert not torch.equal(a, x)


def _tiny_mlm(tiny_bert_dir):
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(tiny_bert_dir)


def test_use_cpu_kernels_swaps_every_dropout_and_keeps_train_mode(tiny_bert_dir):
    model = _tiny_mlm(tiny_bert_dir).eval()
    plain = sum(type(m) is nn.Dropout for m in model.modules())
    use_cpu_kernels(model)
    assert plain > 0 and sum(type(m) is nn.Dropout for m in model.modules()) == 0
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == plain
    assert not any(m.training for m in model.modules())  # swapped modules keep eval mode
    assert model.config._attn_implementation == ATTENTION


def test_attention_equals_sdpa_without_dropout_with_padding(tiny_bert_dir):
    """Eval (SDPA path) and training with p→0 (the explicit path) both equal transformers' own SDPA."""
    torch.manual_seed(4)
    ids = torch.randint(5, 150, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ref_model = _tiny_mlm(tiny_bert_dir).eval()
    ref = ref_model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    model = use_cpu_kernels(_tiny_mlm(tiny_bert_dir).eval())
    real = mask.bool()
    out = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out[real], ref[real])
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 1e-12  # the explicit training path, dropping nothing
    out = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-5)


def test_attention_gradient_matches_eager(tiny_bert_dir):
    torch.manual_seed(5)
    ids = torch.randint(5, 150, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    grads = []
    for fast in (False, True):
        model = _tiny_mlm(tiny_bert_dir)
        if fast:
            use_cpu_kernels(model)
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 1e-12
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden[mask.bool()].pow(2).sum().backward()
        grads.append(model.base_model.encoder.layer[0].attention.self.query.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_export_config_does_not_name_the_bertlab_attention(tiny_bert_dir, tmp_path):
    from transformers import AutoModel

    model = use_cpu_kernels(_tiny_mlm(tiny_bert_dir))
    model.save_pretrained(tmp_path)
    assert ATTENTION not in json.dumps(json.load(open(tmp_path / "config.json")))
    assert AutoModel.from_pretrained(tmp_path).config._attn_implementation == "sdpa"


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_fast_dropout_edge_rates(p):
    x = torch.randn(10, 10)
    y = fast_dropout(x, p)
    assert torch.equal(y, x if p == 0.0 else torch.zeros_like(x))


def test_causal_attention_is_left_to_sdpa(monkeypatch):
    """The explicit path has no causal mask, so a decoder's attention must never take it."""
    import transformers.integrations.sdpa_attention as sdpa

    from lightning_modules.cpu_kernels import bertlab_attention

    calls = []
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda *a, **k: calls.append(k) or ("sdpa", None))
    module = nn.Module().train()
    module.is_causal = True
    q = torch.randn(1, 2, 4, 8)
    assert bertlab_attention(module, q, q, q, None, dropout=0.1)[0] == "sdpa"
    module.is_causal = False
    out, _ = bertlab_attention(module, q, q, q, None, dropout=0.1)
    assert out.shape == (1, 4, 2, 8) and len(calls) == 1


def _reference_attention(q, k, v, mask, scaling, p):
    """The unfused formula: scores, mask, softmax, ``fast_dropout``, then ·V (autograd through each op)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    return torch.matmul(fast_dropout(torch.softmax(scores, dim=-1), p), v)


def _qkv(dtype=torch.float64, b=3, heads=2, t=7, d=4):
    # [B, T, heads, d] transposed, as HF's attention hands them over
    return [torch.randn(b, t, heads, d, dtype=dtype).transpose(1, 2).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
def test_dropped_attention_equals_the_unfused_formula_with_the_same_masks(mask_kind):
    from lightning_modules.cpu_kernels import explicit_attention

    torch.manual_seed(6)
    q, k, v = _qkv()
    keep = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    keep[1, ..., 4:] = False
    mask = {"bool": keep, "float": torch.where(keep, 0.0, -1e4).double(), "none": None}[mask_kind]
    grad = torch.randn(3, 2, 7, 4, dtype=torch.float64)
    torch.manual_seed(7)
    ref = _reference_attention(q, k, v, mask, 0.5, 0.3)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    torch.manual_seed(7)  # the same dropout mask: drawn after the softmax in both
    out = explicit_attention(q, k, v, mask, 0.5, 0.3, True)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_dropped_attention_drops_at_rate_p_and_scales_survivors():
    from lightning_modules.cpu_kernels import explicit_attention

    torch.manual_seed(8)
    q = torch.zeros(4, 8, 64, 16, dtype=torch.float64)  # uniform attention: every prob is 1/64
    v = torch.eye(64, dtype=torch.float64)[None, None, :, :16].expand(4, 8, 64, 16)
    out = explicit_attention(q, q, v, None, 1.0, 0.25, True)  # out[..., j] = kept(j) / 64 / 0.75
    kept = out[..., :16] * 64 * 0.75
    assert torch.allclose(kept, kept.round()) and set(kept.unique().tolist()) == {0.0, 1.0}
    assert abs(kept.mean().item() - 0.75) < 0.02


def test_dropped_attention_under_bf16_autocast_computes_in_bf16_and_returns_input_dtype_grads():
    from lightning_modules.cpu_kernels import explicit_attention

    torch.manual_seed(9)
    q, k, v = _qkv(torch.float32, b=2, heads=2, t=9, d=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(10)
        out = explicit_attention(q, k, v, None, 8**-0.5, 0.1, True)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.float32 for g in grads)
    torch.manual_seed(10)
    ref = _reference_attention(q, k, v, None, 8**-0.5, 0.1)
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)


def test_dropped_attention_keeps_one_score_sized_tensor_less_for_backward():
    """Saved for backward: the probabilities and a bool keep-mask, not also the dropped probabilities."""
    from lightning_modules.cpu_kernels import explicit_attention

    def saved_bytes(fn):
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(sizes)

    q, k, v = _qkv(torch.float32, b=4, heads=4, t=64, d=8)
    scores_bytes = 4 * 4 * 64 * 64 * 4
    torch.manual_seed(11)
    old = saved_bytes(lambda: _reference_attention(q, k, v, None, 0.3, 0.1))
    new = saved_bytes(lambda: explicit_attention(q, k, v, None, 0.3, 0.1, True))
    assert old - new >= scores_bytes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_scale_is_the_product_with_the_bool_mask(dtype):
    from lightning_modules.cpu_kernels import masked_scale

    torch.manual_seed(12)
    x = torch.randn(5, 7, 9).to(dtype)
    keep = keep_mask(x.shape, 0.3, x.device)
    out = masked_scale(x, keep, 1 / 0.7)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out == 0, ~keep | (x == 0))
    torch.testing.assert_close(
        out.float(), x.float() * keep / 0.7, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0
    )
