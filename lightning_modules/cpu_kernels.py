"""Faster CPU training of HF BERT-family encoders: cheap dropout masks and an attention that uses them.

Measured on this project's 2-core AVX512-BF16 CPU (MiniLM, batch 32 × 128 tokens, bf16 autocast), a
training step spent ~20 % of its time in ``aten::bernoulli_``: torch draws one 32-bit Mersenne
Twister number per element for dropout, and its bf16 path is not vectorised. The attention-probability
dropout alone is 6.3 M draws per layer and per step. Here a keep-mask is cut from 64-bit random draws
16 bits at a time (4 elements per draw), and stored as ``bool`` for the backward pass; it multiplies
as ``uint8`` (``masked_scale``), since torch converts a ``bool`` operand element by element.

* ``FastDropout`` replaces every plain ``nn.Dropout`` of the model (hidden, embedding, classifier).
  An element is dropped with probability ``round(p · 2¹⁶) / 2¹⁶`` (0.100006 for p = 0.1) and the
  survivors are scaled by ``1 / (1 - p)``, as in ``nn.Dropout``. It draws from torch's global
  generator, so ``seed_everything`` still fixes it.
* ``"bertlab"`` attention (registered with transformers' ``AttentionInterface``): in training with
  attention dropout it computes softmax(QKᵀ·s + mask) with ``FastDropout``'s mask, then ·V (the
  math path torch's SDPA takes anyway when dropout > 0 on CPU); otherwise it is transformers' SDPA
  (flash kernel). The mask format is SDPA's. ``_DroppedAttention`` is that path as one autograd
  node: it keeps the probabilities and the keep-mask, not the dropped probabilities (recomputed in
  the backward), folds the scale into Q and the 1/(1-p) into the ``[B, heads, T, d]`` output, and masks
  in place, so a ``[B, heads, T, T]`` tensor per layer is neither kept nor passed over as often.

On CUDA both defer to torch (Philox dropout and fused SDPA are already fast there).
``save_pretrained`` does not write the attention choice, so exports load in plain transformers.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION = "bertlab"
_BITS = 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of ``shape``: True with probability ``1 - round(p·2¹⁶)/2¹⁶``, from torch's global generator."""
    n = 1
    for size in shape:
        n *= int(size)
    draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    threshold = round(p * 2**_BITS) - 2 ** (_BITS - 1)  # int16 values are uniform over [-2¹⁵, 2¹⁵)
    return draws.view(torch.int16)[:n].view(shape) >= threshold


def masked_scale(x: torch.Tensor, keep: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x · keep · scale`` in one pass. A bool operand makes torch convert it element by element (~4× the
    time of the product itself in bf16); read as ``uint8``, the same bytes multiply at full speed."""
    keep = keep.view(torch.uint8)
    return x * keep if scale == 1.0 else torch.addcmul(x.new_zeros(()), x, keep, value=scale)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return masked_scale(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return masked_scale(grad, keep, ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with masks from ``keep_mask`` on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def bertlab_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention signature: (output ``[B, T, heads, d]``, None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = bool(kwargs.get("is_causal", getattr(module, "is_causal", False)))  # decoders keep SDPA's masking
    if not (module.training and dropout > 0.0) or query.device.type != "cpu" or causal:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out = explicit_attention(query, key, value, attention_mask, scaling, dropout, module.training)
    return out.transpose(1, 2).contiguous(), None


def explicit_attention(query, key, value, attention_mask, scaling, dropout: float, training: bool) -> torch.Tensor:
    """softmax(QKᵀ·s + mask), ``FastDropout``'s masks, then ·V: ``[B, heads, Tq, d]``. A bool mask keeps True."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    if training and 0.0 < dropout < 1.0:
        return _DroppedAttention.apply(query, key, value, attention_mask, scaling, dropout)
    scores = _masked(torch.matmul(query, key.transpose(2, 3)).mul_(scaling), attention_mask)
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout, training)
    return torch.matmul(probs.to(value.dtype), value)


def _masked(scores: torch.Tensor, attention_mask) -> torch.Tensor:
    """``scores`` with the mask applied in place: a bool mask keeps True, a float mask is added."""
    if attention_mask is None:
        return scores
    if attention_mask.dtype == torch.bool:
        return scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    return scores.add_(attention_mask.to(scores.dtype))


class _DroppedAttention(torch.autograd.Function):
    """``explicit_attention`` with dropout as one node, computed in autocast's dtype where autocast is on."""

    @staticmethod
    def forward(ctx, query, key, value, attention_mask, scaling: float, p: float):
        device = query.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
        ctx.dtypes = (query.dtype, key.dtype, value.dtype)
        with torch.autocast(device, enabled=False):
            q, k, v = query.to(dtype) * scaling, key.to(dtype), value.to(dtype)
            probs = torch.softmax(_masked(torch.matmul(q, k.transpose(-1, -2)), attention_mask), dim=-1)
            keep = keep_mask(probs.shape, p, probs.device)
            out = torch.matmul(masked_scale(probs, keep), v).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(q, k, v, probs, keep)
        ctx.scaling, ctx.p = scaling, p
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs, keep = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(v.dtype) * (1.0 / (1.0 - ctx.p))
            grad_v = torch.matmul(masked_scale(probs, keep).transpose(-1, -2), grad)
            grad_probs = torch.matmul(grad, v.transpose(-1, -2)).mul_(keep.view(torch.uint8))  # as masked_scale
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            del grad_probs
            grad_q = torch.matmul(grad_scores, k).mul_(ctx.scaling)
            grad_k = torch.matmul(grad_scores.transpose(-1, -2), q)
        grads = (g.to(dt) for g, dt in zip((grad_q, grad_k, grad_v), ctx.dtypes))
        return (*grads, None, None, None)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, bertlab_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


_register()  # at import: a model unpickled in a ddp_spawn worker finds its attention registered


def use_cpu_kernels(model: nn.Module) -> nn.Module:
    """Swap ``model``'s dropouts for ``FastDropout`` and, where it runs SDPA, its attention for ``"bertlab"``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace).train(child.training))
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTENTION)
    return model
