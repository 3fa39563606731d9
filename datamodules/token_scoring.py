"""The ``saliency`` and ``mlm_entropy`` token scorers (``datamodules.corpus_scoring`` kinds).

These are not Gu et al.'s selective masking (that is ``buffer_rule`` + Model_b) nor the task-entropy
idea (``task_entropy``); they stay as alternative scores for the same ``SelectiveMasker``:
``importance_scores`` is a classifier's gradient × input saliency, ``entropy_scores`` a masked LM's
predictive entropy. Both take a tokenised ``batch`` (``input_ids``, ``attention_mask``, optionally
``token_type_ids`` and ``special_tokens_mask``) and return a float tensor ``[batch, seq]`` that
is zero at padding and special tokens. ``special_ids`` (e.g. ``tokenizer.all_special_ids``)
marks specials when the batch has no ``special_tokens_mask``. The DataModule runs a step once,
over the corpus, and stores ``scores[i, :len_i]`` with example ``i``; the masker only reads them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def _scoreable(batch: dict, special_ids: Iterable[int]) -> torch.Tensor:
    ids = batch["input_ids"]
    keep = batch.get("attention_mask", torch.ones_like(ids)).bool()
    keep &= ~torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype))
    if "special_tokens_mask" in batch:
        keep &= ~batch["special_tokens_mask"].bool()
    return keep


def _logits(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


class _EvalMode:
    """Dropout off while scoring, the caller's train/eval state restored afterwards."""

    def __init__(self, model):
        self.model = model if isinstance(model, nn.Module) else None

    def __enter__(self):
        self.was_training = self.model is not None and self.model.training
        if self.model is not None:
            self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def importance_scores(
    model, batch: dict, special_ids: Iterable[int] = (), embed: Callable | None = None
) -> torch.Tensor:
    """Per-token importance for a fine-tuned classifier: ‖∂z_ŷ/∂e_t ⊙ e_t‖₂, the gradient × input
    saliency (Shrikumar et al. 2017; Denil et al. 2014) of the predicted class's logit z_ŷ with
    respect to each token's input embedding e_t (the ``saliency`` scorer).

    ``model`` is either an HF sequence classifier (anything with ``get_input_embeddings`` that
    takes ``inputs_embeds``) or a plain ``logits_fn(inputs_embeds, attention_mask)``, in which
    case ``embed`` maps ids to embeddings. Model parameters get no ``.grad``.
    """
    input_ids, attention_mask = batch["input_ids"], batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
    if embed is None:
        embed = model.get_input_embeddings()
    with _EvalMode(model), torch.enable_grad():
        embeds = embed(input_ids).detach().requires_grad_(True)
        if hasattr(model, "get_input_embeddings"):
            extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
            logits = _logits(model(inputs_embeds=embeds, attention_mask=attention_mask, **extra))
        else:
            logits = model(embeds, attention_mask)
        predicted = logits.detach().argmax(-1, keepdim=True)
        (grad,) = torch.autograd.grad(logits.gather(-1, predicted).sum(), embeds)
    scores = (grad * embeds.detach()).norm(dim=-1)
    return scores.masked_fill(~_scoreable(batch, special_ids), 0.0).float()


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


@torch.no_grad()
def entropy_scores(
    mlm_model,
    batch: dict,
    mask_token_id: int,
    special_ids: Iterable[int] = (),
    mask_each: bool = False,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Entropy (nats) of a masked LM's predictive distribution at each token (the ``mlm_entropy``
    scorer): high where the model is unsure what belongs there.

    By default one forward pass over the *unmasked* input: cheap, but the model sees the token it
    predicts, so entropies are low and mainly rank how surprising each token is. With
    ``mask_each=True`` each scoreable position is replaced by ``mask_token_id`` in its own copy of
    the sequence (as in pseudo-log-likelihood scoring, Salazar et al. 2020): one pass per token,
    run ``chunk_size`` copies at a time — the faithful but L-times dearer estimate.
    ``mlm_model(input_ids=..., attention_mask=...)`` returns logits ``[batch, seq, vocab]`` or an
    object with ``.logits``.
    """
    input_ids = batch["input_ids"]
    attention_mask = batch.get("attention_mask", torch.ones_like(input_ids))
    keep = _scoreable(batch, special_ids)
    extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
    with _EvalMode(mlm_model):
        if not mask_each:
            scores = _entropy(_logits(mlm_model(input_ids=input_ids, attention_mask=attention_mask, **extra)))
            return scores.masked_fill(~keep, 0.0)
        scores = torch.zeros(input_ids.shape)
        rows, cols = keep.nonzero(as_tuple=True)
        for lo in range(0, len(rows), chunk_size):
            r, c = rows[lo : lo + chunk_size], cols[lo : lo + chunk_size]
            ids = input_ids[r].clone()
            ids[torch.arange(len(r)), c] = mask_token_id
            chunk_extra = {k: v[r] for k, v in extra.items()}
            logits = _logits(mlm_model(input_ids=ids, attention_mask=attention_mask[r], **chunk_extra))
            scores[r, c] = _entropy(logits[torch.arange(len(r)), c])
        return scores
