"""``MaskedLM``: masked-language-model (further) pre-training of any BERT-family encoder.

The objective is BERT's (Devlin et al. 2019, §3.1); which tokens are masked is decided by the
maskers (``datamodules.maskers``), so RoBERTa's dynamic masking (Liu et al. 2019), whole-word,
span (SpanBERT, Joshi et al. 2020) and selective masking all feed this one module. A batch holds
``input_ids``, ``attention_mask``, [``token_type_ids``] and ``labels`` (-100 where there is
nothing to predict).

Speed: vocabulary logits are computed only at the masked positions. The encoder's layers below
the last run on the whole batch; the last one runs at the ~15 % masked positions only (keys and
values everywhere, ``lightning_modules.last_layer``), and only those rows go through the model's
own MLM head — the ``[B·T, V]`` logits tensor of HF's ``forward`` is never built. The loss is the
same number (tested against HF's to 1e-5).

Within-task / in-domain further pre-training (Sun et al. 2019, §4 and §5.4) is this module run
on the task's own or in-domain text, then ``export_pretrained`` for the classifier stage.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics import Metric

from bertlab.core.errors import BertlabError
from bertlab.core.hf_loading import from_pretrained
from lightning_modules.cpu_kernels import use_cpu_kernels
from lightning_modules.fresh_start import FreshStart, describe, drop_frozen_grads, fresh_parameters, scale_fresh_lr
from lightning_modules.last_layer import encode_at, sparse_last_layer
from lightning_modules.param_groups import build_param_groups, configure_adamw
from lightning_modules.shared_step import SharedStepModule
from lightning_modules.vocab_loss import scaled_cross_entropy


@dataclass
class ScratchBert:
    """A new BERT whose vocabulary is a tokenizer's; unset fields keep ``BertConfig``'s defaults.

    Args:
        tokenizer: a model directory, or a tokenizer-only directory (e.g. a trained char vocabulary).
    """

    tokenizer: str
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None
    type_vocab_size: int | None = None
    hidden_act: str | None = None
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    layer_norm_eps: float | None = None
    initializer_range: float | None = None

    def config_fields(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "tokenizer" and v is not None}


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


def epochs_cut_steps(trainer) -> str | None:
    """The warning when ``max_epochs`` ends an MLM run before its ``max_steps`` budget, else None.

    MLM stages are budgeted in steps; an ablation's or a recipe's ``max_epochs`` meant for the
    fine-tune would otherwise stop them early without a word.
    """
    steps, epochs = trainer.max_steps, trainer.max_epochs
    if steps is None or steps < 0 or epochs is None or epochs < 0:
        return None
    total = trainer.estimated_stepping_batches
    if total >= steps:
        return None
    return (
        f"bertlab: MLM: max_epochs {epochs} ends training after {int(total)} optimizer steps, before max_steps "
        f"{steps}; set trainer.max_epochs -1 to train for the step budget"
    )


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


def load_tokenizer_dir(name_or_path: str):
    """A tokenizer from a model directory or from a tokenizer-only directory (a trained char vocabulary)."""
    from transformers import AutoTokenizer

    from bertlab.core.models import is_model_dir, load_tokenizer

    path = os.path.expanduser(str(name_or_path))
    if is_model_dir(name_or_path):
        return load_tokenizer(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise BertlabError(
            f"from_scratch.tokenizer {name_or_path!r}: no tokenizer there ({type(e).__name__}); save one with "
            "tokenizer.save_pretrained"
        ) from None


def build_from_scratch(spec: ScratchBert) -> nn.Module:
    """A freshly initialised ``BertForMaskedLM`` whose vocabulary is the given tokenizer's."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = load_tokenizer_dir(spec.tokenizer)
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise BertlabError(f"from_scratch.tokenizer {spec.tokenizer!r} needs both a mask and a pad token")
    fields = spec.config_fields()
    try:
        return BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **fields))
    except ValueError as e:
        raise BertlabError(f"from_scratch: {str(e).splitlines()[0]}") from None


def load_mlm_model(
    model_name_or_path: str | None, from_scratch: ScratchBert | None = None
) -> tuple[nn.Module, set[str]]:
    """(an HF ``*ForMaskedLM`` in train mode, its missing keys): built from ``from_scratch`` if given,
    else loaded; a checkpoint without an MLM head (MiniLM) gets a fresh one, listed in the missing keys."""
    from transformers import AutoModelForMaskedLM

    if from_scratch is not None:
        model, missing = build_from_scratch(from_scratch), set()
    elif model_name_or_path is None:
        raise BertlabError(
            "give `model_name_or_path` (a model directory or `minilm`) or `from_scratch` (a tokenizer and a model size)"
        )
    else:
        model, missing = from_pretrained(AutoModelForMaskedLM, model_name_or_path)
    mlm_head_fn(model)  # unknown architectures fail here, at the edge
    return use_cpu_kernels(model.train()), missing  # from_pretrained leaves eval mode


# Head warm-up steps for a newly initialised MLM head (FreshStart.warmup_steps). Measured on MiniLM/fine-food
# (results/mlm_head_warmup.md): 100 head-only steps of 400 left perplexity worse (202 vs 151 at step 300) and
# the fine-tune no better (0.8027 vs 0.8013), so none by default.
HEAD_WARMUP_STEPS = 0


class MaskedLM(SharedStepModule):
    def __init__(
        self,
        model_name_or_path: str | None = "minilm",
        from_scratch: ScratchBert | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.06,
        warmup_steps: int | None = None,
        compile: bool = False,
        fresh: FreshStart | None = None,
    ):
        """
        Args:
            model_name_or_path: a local HF directory (or ``minilm``); a bare encoder gets a fresh MLM head
                (its decoder tied to the word embeddings).
            from_scratch: build a new BERT instead of loading (``model_name_or_path`` is then ignored):
                ``{tokenizer: DIR, hidden_size: 256, num_hidden_layers: 4, ...}`` (``ScratchBert``).
            warmup_ratio, warmup_steps: linear warmup (RoBERTa: 6%); ``warmup_steps`` wins when given.
            compile: ``torch.compile`` the encoder in ``configure_model`` (the head sees a varying
                number of rows, so it stays eager).
            fresh: how a newly initialised MLM head starts (``FreshStart``: ``warmup_steps``,
                ``lr_multiplier``). Default: a head warm-up of ``HEAD_WARMUP_STEPS`` when the head is
                new (MiniLM), none when it was loaded. Its tied decoder (the word embeddings) trains too.
        """
        super().__init__()
        self.save_hyperparameters()
        self.model, missing = load_mlm_model(model_name_or_path, from_scratch)
        self.val_stats, self.test_stats = MLMStats(), MLMStats()
        new = {n for n, _ in self.named_parameters() if n.startswith("model.") and n[len("model.") :] in missing}
        self.fresh_names = new  # from scratch, ``missing`` is empty: no pretrained encoder to protect
        fresh = FreshStart(**fresh) if isinstance(fresh, dict) else fresh  # hparams of a checkpoint hold a dict
        self.fresh = fresh if fresh is not None else FreshStart(HEAD_WARMUP_STEPS if new else 0)
        if self.fresh.reinit_layers:
            raise BertlabError("fresh.reinit_layers is a fine-tuning recipe; MaskedLM does not re-initialise layers")
        decoder = self.model.get_output_embeddings()
        tied = {n for n, p in self.named_parameters() if decoder is not None and p is decoder.weight}
        self.warmup_names = new | tied

    def on_fit_start(self) -> None:
        from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

        if self.hparams.from_scratch is not None:
            rank_zero_info("bertlab: MLM: a BERT from scratch, every parameter newly initialised; no head warm-up")
        else:
            rank_zero_info(describe(fresh_parameters(self, self.fresh_names), self.fresh.warmup_steps, "MLM"))
        cut = epochs_cut_steps(self.trainer)
        if cut:
            rank_zero_warn(cut)

    def on_after_backward(self) -> None:
        if self.global_step < self.fresh.warmup_steps:
            drop_frozen_grads(self, self.warmup_names)

    def configure_model(self) -> None:
        if self.hparams.compile:
            # The sparse path calls the encoder and the head directly, never ``self.model.__call__``.
            self.model.base_model.compile()

    @property
    def head(self) -> Callable[[torch.Tensor], torch.Tensor]:
        # A property, not an attribute: registering ``model.cls`` twice would duplicate it in checkpoints.
        return mlm_head_fn(self.model)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``[N, V]``, targets ``[N]``) at the masked positions only."""
        return sparse_mlm_logits(self.model, self.head, batch)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits, targets = self(batch)
        loss = masked_lm_loss(logits, targets)
        if stage == "train":
            # token-weighted, so the epoch value is the loss per masked token
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=targets.numel())
            if "mask_stats" in batch:
                self._log_mask_stats(batch["mask_stats"])
        else:
            getattr(self, f"{stage}_stats").update(logits, targets)
        return loss

    def _log_mask_stats(self, stats: torch.Tensor) -> None:
        """A scoring masker's (masked, maskable, masked important) token counts: the effective masking rate and
        the share of masked tokens that are important rather than filler, each token-weighted over the epoch."""
        masked, maskable, important = (float(x) for x in stats.tolist())
        self.log(
            "train/mask_rate", masked / max(maskable, 1.0), on_step=True, on_epoch=True, batch_size=int(maskable) or 1
        )
        self.log(
            "train/mask_important_fraction",
            important / max(masked, 1.0),
            on_step=True,
            on_epoch=True,
            batch_size=int(masked) or 1,
        )

    def _log_stats(self, stage: str) -> None:
        stats = getattr(self, f"{stage}_stats")
        self.log_dict({f"{stage}/{k}": v for k, v in stats.compute().items()}, prog_bar=stage == "val")
        stats.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_stats("val")

    def on_test_epoch_end(self) -> None:
        self._log_stats("test")

    def configure_optimizers(self):
        h = self.hparams
        groups = build_param_groups(self, h.lr, h.weight_decay, encoder_attr="model")
        groups = scale_fresh_lr(groups, fresh_parameters(self, self.fresh_names), self.fresh.lr_multiplier)
        return configure_adamw(self, groups, h.lr, h.warmup_ratio, h.warmup_steps)

    def export_pretrained(self, directory: str) -> bool:
        """``save_pretrained`` of the MLM model: a fill-mask checkpoint whose encoder the classifier stage loads."""
        self.model.save_pretrained(directory)
        return True

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Last hidden states ``[B, T, H]`` of the encoder (what a ``DownstreamProbe`` pools)."""
        return encoder_hidden(self.model, input_ids, attention_mask, token_type_ids)
