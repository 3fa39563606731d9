"""The masked-LM objective, computed at the masked positions only; ``MaskedLM`` and ``PET`` share it.

The encoder's layers below the last run on the whole batch; the last one runs at the ~15 % masked positions
only (keys and values everywhere, ``lightning_modules.last_layer``), and only those rows go through the model's
own MLM head (``mlm_head_fn``): the ``[B·T, V]`` logits tensor of HF's ``forward`` is never built. The loss is
the same number (tested against HF's to 1e-5).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn
from torchmetrics import Metric

from bertlab.core.errors import BertlabError
from lightning_modules.last_layer import encode_at, sparse_last_layer
from lightning_modules.vocab_loss import scaled_cross_entropy


def mlm_head_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLM head of an HF ``*ForMaskedLM`` as a function ``hidden [N, H] -> logits [N, V]``.

    Each branch applies exactly what the model's own ``forward`` applies after the encoder; the
    decoder's bias is tied to the head's ``bias`` parameter in transformers v5, so calling the
    decoder module adds it, as HF does.
    """
    if hasattr(model, "cls") and hasattr(model.cls, "predictions"):  # BERT, MiniLM: transform + decoder
        return model.cls
    if hasattr(model, "lm_head"):  # RoBERTa family: dense, gelu, layer_norm, decoder
        return model.lm_head
    if all(
        hasattr(model, k) for k in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")
    ):  # DistilBERT
        return lambda h: model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
    raise BertlabError(
        f"no masked-LM head known for {type(model).__name__}; supported: BERT/MiniLM (cls), RoBERTa (lm_head), "
        "DistilBERT (vocab_projector)"
    )


def _encoder_inputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
) -> dict:
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if (
        token_type_ids is not None
        and getattr(model.config, "type_vocab_size", 0) >= 2
        and "token_type_ids" in inspect.signature(model.base_model.forward).parameters
    ):
        kwargs["token_type_ids"] = token_type_ids
    return kwargs


def encoder_hidden(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Last hidden states ``[B, T, H]`` of the encoder inside an HF ``*ForMaskedLM``."""
    kwargs = _encoder_inputs(model, input_ids, attention_mask, token_type_ids)
    return model.base_model(**kwargs, return_dict=True).last_hidden_state


def sparse_mlm_logits(
    model: nn.Module, head: Callable, batch: dict, prefix: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits ``[N, V]``, targets ``[N]``) at the N positions whose label is not -100.

    ``prefix`` selects the keys, e.g. ``mlm_`` reads ``mlm_input_ids``, ``mlm_attention_mask``, ``mlm_labels``.
    The last layer runs at those positions only where the encoder allows (``last_layer.encode_at``).
    """
    labels = batch[f"{prefix}labels"]
    kwargs = _encoder_inputs(
        model, batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], batch.get(f"{prefix}token_type_ids")
    )
    keep = labels != -100
    if sparse_last_layer(model.base_model):
        return head(encode_at(model.base_model, keep, **kwargs)), labels[keep]
    return head(model.base_model(**kwargs, return_dict=True).last_hidden_state[keep]), labels[keep]


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked tokens; exactly 0 (still attached to the graph) when none are masked.

    HF's mean over zero tokens is NaN; a summed loss over ``max(N, 1)`` gives 0 instead, and every
    parameter still receives a (zero) gradient, so DDP's reducer sees the same graph on every rank.
    """
    return scaled_cross_entropy(logits, targets, 1.0 / max(targets.numel(), 1))


class MLMStats(Metric):
    """Token-weighted sums (loss, correct, count), summed across ranks: epoch loss, perplexity and accuracy."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("loss_sum", "correct", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        self.loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        self.correct += (logits.argmax(-1) == targets).sum()
        self.count += targets.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp_min(1)
        loss = self.loss_sum / n
        return {"loss": loss.float(), "perplexity": loss.exp().float(), "mlm_acc": (self.correct / n).float()}
