"""``lightning_modules.vocab_loss``: the blocked cross-entropy against ``F.cross_entropy``, loss and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules import vocab_loss
from lightning_modules.vocab_loss import scaled_cross_entropy


def _reference(logits, targets, scale):
    loss = F.cross_entropy(logits.float(), targets, reduction="sum") * scale
    return loss, torch.autograd.grad(loss, logits)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_gradient_equal_torch_across_blocks(dtype):
    torch.manual_seed(0)
    rows = 2 * vocab_loss.ROWS + 5  # three blocks, the last one short
    logits = (torch.randn(rows, 301) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 301, (rows,))
    ref_loss, ref_grad = _reference(logits, targets, 1 / rows)
    loss = scaled_cross_entropy(logits, targets, 1 / rows)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    # fp32 arithmetic in another order: equal to fp32 rounding, then one rounding into the logits' dtype
    ulp = 1e-6 if dtype == torch.float32 else 2**-8
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=ulp, atol=1e-9)


def test_an_underflowing_target_gets_the_exact_loss():
    logits = torch.zeros(3, 50)
    logits[1, 0] = 200.0  # the target of row 1 has probability e^-200: 0 in fp32
    logits.requires_grad_()
    targets = torch.tensor([0, 5, 7])
    ref_loss, ref_grad = _reference(logits, targets, 0.5)
    loss = scaled_cross_entropy(logits, targets, 0.5)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], ref_grad)


def test_an_incoming_gradient_other_than_one_scales_it():
    torch.manual_seed(1)
    logits = torch.randn(10, 20, requires_grad=True)
    targets = torch.randint(0, 20, (10,))
    (grad,) = torch.autograd.grad(3.0 * scaled_cross_entropy(logits, targets, 0.1), logits)
    (ref,) = torch.autograd.grad(3.0 * F.cross_entropy(logits, targets, reduction="sum") * 0.1, logits)
    torch.testing.assert_close(grad, ref)


def test_no_rows_is_zero_and_still_attached():
    logits = torch.randn(0, 7, requires_grad=True)
    loss = scaled_cross_entropy(logits, torch.zeros(0, dtype=torch.long), 1.0)
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.autograd.grad(loss, logits)[0].shape == (0, 7)


def test_without_a_gradient_it_is_torchs_loss():
    torch.manual_seed(2)
    logits = torch.randn(6, 9).to(torch.bfloat16)
    targets = torch.randint(0, 9, (6,))
    assert torch.equal(
        scaled_cross_entropy(logits, targets, 0.25), F.cross_entropy(logits.float(), targets, reduction="sum") * 0.25
    )


def test_off_the_cpu_the_loss_is_torchs(monkeypatch):
    def blocked(*args):
        raise AssertionError("the blocked loss ran off the CPU")

    monkeypatch.setattr(vocab_loss._BlockCrossEntropy, "apply", blocked)
    logits = torch.empty(4, 9, device="meta", requires_grad=True)
    loss = scaled_cross_entropy(logits, torch.zeros(4, dtype=torch.long, device="meta"), 0.5)
    assert loss.device.type == "meta" and loss.shape == ()
