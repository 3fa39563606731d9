"""``MaskedLM``: masked-language-model (further) pre-training of any BERT-family encoder.

The objective is BERT's (Devlin et al. 2019, §3.1); which tokens are masked is decided by the
maskers (``datamodules.maskers``), so RoBERTa's dynamic masking (Liu et al. 2019), whole-word,
span (SpanBERT, Joshi et al. 2020) and selective masking all feed this one module. A batch holds
``input_ids``, ``attention_mask``, [``token_type_ids``] and ``labels`` (-100 where there is
nothing to predict).

Speed: vocabulary logits are computed only at the masked positions (``mlm_objective``). The model is
loaded, or built from scratch, by ``mlm_model``.

Within-task / in-domain further pre-training (Sun et al. 2019, §4 and §5.4) is this module run
on the task's own or in-domain text, then ``export_pretrained`` for the classifier stage.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bertlab.core.errors import BertlabError
from lightning_modules.fresh_start import FreshStart, describe, drop_frozen_grads, fresh_parameters, scale_fresh_lr
from lightning_modules.mlm_model import ScratchBert, load_mlm_model
from lightning_modules.mlm_objective import MLMStats, encoder_hidden, masked_lm_loss, mlm_head_fn, sparse_mlm_logits
from lightning_modules.param_groups import build_param_groups, configure_adamw
from lightning_modules.shared_step import SharedStepModule


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
