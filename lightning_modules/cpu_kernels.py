"""Faster CPU training of HF BERT-family encoders: cheap dropout masks and an attention that uses them.

Measured on this project's 2-core AVX512-BF16 CPU (MiniLM, batch 32 × 128 tokens, bf16 autocast), a
training step spent ~20 % of its time in ``aten::bernoulli_``: torch draws one 32-bit Mersenne
Twister number per element for dropout, and its bf16 path is not vectorised. The attention-probability
dropout alone is 6.3 M draws per layer and per step. Here a keep-mask is cut from 64-bit random draws
16 bits at a time (4 elements per draw), and stored as ``bool`` for the backward pass.

* ``FastDropout`` replaces every plain ``nn.Dropout`` of the model (hidden, embedding, classifier).
  An element is dropped with probability ``round(p · 2¹⁶) / 2¹⁶`` (0.100006 for p = 0.1) and the
  survivors are scaled by ``1 / (1 - p)``, as in ``nn.Dropout``. It draws from torch's global
  generator, so ``seed_everything`` still fixes it.
* ``"bertlab"`` attention (registered with transformers' ``AttentionInterface``): in training with
  attention dropout it computes softmax(QKᵀ·s + mask) with ``FastDropout``'s mask, then ·V (the
  math path torch's SDPA takes anyway when dropout > 0 on CPU); otherwise it is transformers' SDPA
  (flash kernel). The mask format is SDPA's.

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


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


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
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout, training)
    return torch.matmul(probs.to(value.dtype), value)


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
