"""``PET``: pattern-exploiting training (Schick & Schütze 2021, "Exploiting Cloze Questions for
Few Shot Text Classification and Natural Language Inference").

A classification task becomes a cloze question: the data module renders each text into patterns
such as ``"{text} It was [MASK]."`` (``datamodules.pet``), and the verbalizer maps every label to
one vocabulary word (``pos → great``). The class scores are the MLM head's logits of the
verbalizer words at the mask — only the mask position's hidden state goes through the head —
and the loss is cross-entropy over them (§3.1).

Patterns and verbalizer: the patterns live on the data module (one source of truth; rendering
needs the tokenizer); this module reads their number P off the batch (``B·P`` rows for ``B``
examples). Departure from the paper: PET trains one model per pattern and distils their ensemble;
here one model sees every example with every pattern, the loss is the mean over patterns, and
predictions average the P patterns' verbalizer logits (the uniform ensemble of §3.3, without its distillation step).

Auxiliary MLM (§3.2): with ``mlm_weight`` = α > 0 the loss is ``(1 − α)·L_CE + α·L_MLM``, on the
``mlm_*`` inputs that the data module's masker adds to training batches; the paper uses α = 1e-4.

The pretrained MLM head matters: a bare encoder (MiniLM) gets a freshly initialised head, so run
a ``MaskedLM`` stage first and start PET from its export. ``export_pretrained`` writes the MLM
model, whose encoder initialises the classifier stage.
"""

from __future__ import annotations

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bertlab.core.errors import BertlabError
from bertlab.core.models import load_tokenizer
from lightning_modules.mlm_model import load_mlm_model
from lightning_modules.mlm_objective import encoder_hidden, masked_lm_loss, mlm_head_fn, sparse_mlm_logits
from lightning_modules.param_groups import build_param_groups, configure_adamw
from lightning_modules.shared_step import SharedStepModule


def verbalizer_token_ids(tokenizer, verbalizer: dict[str, str], labels: list[str]) -> list[int]:
    """The vocabulary id of each label's word, in label-id order.

    A word is tokenised with a leading space (" great"), as it follows a space before the mask;
    for WordPiece that changes nothing, for byte-level BPE it picks the ``Ġgreat`` variant.
    """
    missing = [lab for lab in labels if lab not in verbalizer]
    if missing:
        raise BertlabError(f"the verbalizer has no word for label(s) {missing}; give one word per label: {labels}")
    ids = []
    for lab in labels:
        word = str(verbalizer[lab])
        pieces = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise BertlabError(
                f"multi-token verbalizer word {word!r} (label {lab!r}) tokenises to "
                f"{tokenizer.convert_ids_to_tokens(pieces)}; "
                "choose a word that is a single token of this vocabulary"
            )
        if pieces[0] == tokenizer.unk_token_id:
            raise BertlabError(
                f"verbalizer word {word!r} (label {lab!r}) is not in the vocabulary (it tokenises to "
                f"{tokenizer.unk_token})"
            )
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise BertlabError(
            f"verbalizer words must differ from each other: {dict(zip(labels, tokenizer.convert_ids_to_tokens(ids)))}"
        )
    return ids


def pet_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits [B, P, C]`` against ``labels [B]``: the mean over examples and patterns."""
    b, p, c = logits.shape
    return nn.functional.cross_entropy(logits.reshape(b * p, c).float(), labels.repeat_interleave(p))


class PET(SharedStepModule):
    def __init__(
        self,
        model_name_or_path: str = "minilm",
        verbalizer: dict[str, str] | None = None,
        num_labels: int = 2,
        id2label: dict[int, str] | None = None,
        mlm_weight: float = 0.0,
        lr: float = 1e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        compile: bool = False,
    ):
        """
        Args:
            model_name_or_path: a local HF directory (or ``minilm``) with a fill-mask model and its tokenizer.
            verbalizer: label name → one word that is a single token (default: the label names themselves).
            num_labels, id2label: set from the data by the CLI.
            mlm_weight: α of the auxiliary MLM loss (0 = off; the paper uses 1e-4); needs ``data.masker``.
            compile: ``torch.compile`` the encoder in ``configure_model``.
        """
        super().__init__()
        self.save_hyperparameters()
        if id2label is None:
            raise BertlabError(
                "PET needs id2label to give each label its verbalizer word (the CLI links it from the data)"
            )
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if sorted(id2label) != list(range(num_labels)):
            raise BertlabError(f"id2label must name labels 0..{num_labels - 1}, got ids {sorted(id2label)}")
        if not 0.0 <= mlm_weight < 1.0:
            raise BertlabError(f"mlm_weight (α) must be in [0, 1), got {mlm_weight}; the paper uses 1e-4")
        labels = [id2label[i] for i in range(num_labels)]
        ids = verbalizer_token_ids(
            load_tokenizer(model_name_or_path), verbalizer or {lab: lab for lab in labels}, labels
        )
        self.register_buffer("verbalizer_ids", torch.tensor(ids), persistent=False)

        self.model, missing = load_mlm_model(model_name_or_path)
        if any(k.startswith(("cls.", "lm_head.", "vocab_")) for k in missing):
            rank_zero_warn(
                f"{model_name_or_path!r} has no trained MLM head, so PET starts from a random one; start from a "
                "MaskedLM export"
            )
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_labels, average="micro"),
                "f1": MulticlassF1Score(num_labels, average="macro"),
            }
        )
        self.train_metrics, self.val_metrics, self.test_metrics = (
            metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")
        )

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.model.base_model.compile()  # the head is called directly, on a varying number of rows

    # ------------------------------------------------------------ forward

    def pattern_logits(self, batch: dict) -> torch.Tensor:
        """Verbalizer logits ``[B, P, C]`` at the mask of each of the B·P rendered rows."""
        hidden = encoder_hidden(self.model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch["mask_pos"]]
        logits = mlm_head_fn(self.model)(at_mask)[:, self.verbalizer_ids]
        return logits.view(batch["idx"].shape[0], -1, logits.shape[-1])

    def forward(self, batch: dict) -> torch.Tensor:
        """Class logits ``[B, C]``: the patterns' verbalizer logits averaged."""
        return self.pattern_logits(batch).mean(dim=1)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        per_pattern = self.pattern_logits(batch)
        loss = pet_loss(per_pattern, batch["labels"])
        bs = batch["labels"].shape[0]
        alpha = self.hparams.mlm_weight
        if stage == "train" and alpha > 0:
            if "mlm_input_ids" not in batch:
                raise BertlabError(
                    "mlm_weight > 0 needs MLM inputs in the batches: set the data module's `masker` (e.g. "
                    "class_path: datamodules.maskers.DynamicMasker)"
                )
            mlm = masked_lm_loss(*sparse_mlm_logits(self.model, mlm_head_fn(self.model), batch, prefix="mlm_"))
            self.log("train/mlm_loss", mlm, on_step=True, on_epoch=True, batch_size=bs)
            loss = (1 - alpha) * loss + alpha * mlm
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=bs,
            sync_dist=stage != "train",
        )
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(per_pattern.detach().mean(dim=1), batch["labels"])
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=bs)
        return self.test_outputs(loss, per_pattern.mean(dim=1), batch) if stage == "test" else loss

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return {"idx": batch["idx"], "probs": torch.softmax(self(batch).float(), dim=-1)}

    def configure_optimizers(self):
        h = self.hparams
        groups = build_param_groups(self, h.lr, h.weight_decay, encoder_attr="model")
        return configure_adamw(self, groups, h.lr, h.warmup_ratio)

    def export_pretrained(self, directory: str) -> bool:
        """``save_pretrained`` of the MLM model (a fill-mask checkpoint); its encoder initialises the classifier
        stage."""
        self.model.save_pretrained(directory)
        return True
