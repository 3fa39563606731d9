"""Cross-entropy over a large vocabulary, a block of rows at a time, with the gradient made in the forward.

The masked-LM head's logits are ``[N, V]`` (N masked tokens, V = 30k). Under bf16 autocast,
``F.cross_entropy(logits.float())`` writes an fp32 copy, its log-softmax, a zero-filled fp32 gradient,
the log-softmax gradient and a bf16 copy of that: ~13 % of a bf16 MiniLM MLM step on this project's
2-core CPU (torch has no bf16-in, fp32-out log-softmax on CPU; its softmax has one).

``scaled_cross_entropy(logits, targets, scale)`` is ``scale · F.cross_entropy(logits.float(), targets,
reduction="sum")``. Each block of rows gets its fp32 softmax straight from the logits
(``torch.softmax(..., dtype=float32)``); the loss is read off it (−log p of the target) and the block
turned into the gradient in place, ``scale · (softmax − one-hot)``, rounded once into the logits'
dtype, as autograd's cast would round it. The backward returns that gradient, or, when its incoming
gradient is not 1 (gradient accumulation divides the loss), that gradient times it: a second rounding.
A target whose probability underflows (< 1e-30) gets its loss from an exact log-sum-exp instead. On
CUDA, torch's fused kernels already avoid these passes: the loss is torch's there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROWS = 64  # a block of 64 rows × 30k fp32 probabilities is ~8 MB
_TINY = 1e-30


class _BlockCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, scale: float) -> torch.Tensor:
        grad = torch.empty_like(logits)
        staging = None if logits.dtype == torch.float32 else torch.empty(0, dtype=torch.float32, device=logits.device)
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for start in range(0, logits.shape[0], ROWS):
            block, target = logits[start : start + ROWS], targets[start : start + ROWS, None]
            probs = grad[start : start + ROWS] if staging is None else staging.resize_(block.shape)
            torch.softmax(block, dim=-1, dtype=torch.float32, out=probs)
            p = probs.gather(1, target)
            nll = -p.log()
            tiny = p < _TINY
            if tiny.any():  # -log(p) has lost its digits: log-sum-exp minus the target's logit, exactly
                rows = tiny[:, 0]
                exact = block[rows].float()
                nll[rows] = torch.logsumexp(exact, dim=-1, keepdim=True) - exact.gather(1, target[rows])
            total += nll.sum(dtype=torch.float64)
            probs.scatter_add_(1, target, torch.full(target.shape, -1.0, dtype=probs.dtype, device=probs.device))
            probs.mul_(scale)
            if staging is not None:
                grad[start : start + ROWS] = probs
        ctx.save_for_backward(grad)
        return (total * scale).float()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        if bool(grad_output == 1):
            return grad, None, None
        return grad * grad_output.float(), None, None  # a 0-dim fp32 factor, not rounded to grad's dtype first


def scaled_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale · F.cross_entropy(logits.float(), targets, reduction="sum")``; every target is a class index."""
    if not (logits.requires_grad and torch.is_grad_enabled()) or logits.device.type != "cpu":
        return F.cross_entropy(logits.float(), targets, reduction="sum") * scale
    return _BlockCrossEntropy.apply(logits, targets, float(scale))
