"""``TokenTagger``: Model_b of selective masking (Gu et al. 2020, "Train No Evil", §3.1).

Model_0's buffer rule labels only the labelled sentences it classifies correctly; as in the authors'
code, the others train Model_b as all-zero (``datamodules.token_labels``). Model_b, an
``AutoModelForTokenClassification`` on the same encoder, learns those important-token labels and is
then run over each sentence of the unlabelled domain corpus, where no gold label exists to run the
buffer rule with.

Batches carry ``input_ids``, ``attention_mask`` and ``labels`` per token (1 important, 0 not, -100 at
specials and padding). Logged: ``{stage}/loss`` and token-level ``{stage}/f1`` (of the *important*
class), ``precision``, ``recall``, ``acc``. The export is an HF-native token classifier whose
``id2label`` is ``{0: other, 1: important}``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score, BinaryPrecision, BinaryRecall

from bertlab.core.errors import BertlabError
from bertlab.core.hf_loading import from_pretrained, register_output_capture
from lightning_modules.param_groups import build_param_groups, configure_adamw
from lightning_modules.shared_step import SharedStepModule

ID2LABEL = {0: "other", 1: "important"}


def _metrics(stage: str) -> MetricCollection:
    kw = {"ignore_index": -100}
    return MetricCollection(
        {
            "f1": BinaryF1Score(**kw),
            "precision": BinaryPrecision(**kw),
            "recall": BinaryRecall(**kw),
            "acc": BinaryAccuracy(**kw),
        },
        prefix=f"{stage}/",
    )


class TokenTagger(SharedStepModule):
    def __init__(
        self,
        model_name_or_path: str = "minilm",
        num_labels: int = 2,
        id2label: dict[int, str] | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        important_weight: float = 1.0,
        knowledge_dim: int = 0,
    ):
        """
        Args:
            model_name_or_path: the encoder Model_b starts from (a local HF directory or ``minilm``); use the
                encoder Model_0 was fine-tuned from, so that both read the same tokens.
            num_labels, id2label: the tag set, linked from the data by the CLI (``{0: other, 1: important}``).
            important_weight: weight of the *important* class in the cross-entropy (> 1 when it is rare).
            knowledge_dim: linked from the data by the CLI like every stage's; a token tagger takes none (0).
        """
        if knowledge_dim:
            raise BertlabError("a token tagger takes no knowledge vectors (knowledge_dim must be 0)")
        super().__init__()
        self.save_hyperparameters()
        if not important_weight > 0:
            raise BertlabError(f"important_weight must be > 0, got {important_weight}")
        id2label = {int(k): str(v) for k, v in (id2label or ID2LABEL).items()}
        if num_labels != 2 or id2label != ID2LABEL:
            raise BertlabError(f"TokenTagger tags {ID2LABEL}; the data gives {num_labels} labels {id2label}")
        from transformers import AutoModelForTokenClassification

        self.model, _ = from_pretrained(
            AutoModelForTokenClassification,
            model_name_or_path,
            num_labels=2,
            id2label=id2label,
            label2id={v: k for k, v in ID2LABEL.items()},
            ignore_mismatched_sizes=True,
        )
        self.model.train()  # from_pretrained leaves eval mode, and Lightning keeps a submodule's mode: no dropout
        self.register_buffer("class_weight", torch.tensor([1.0, float(important_weight)]), persistent=False)
        self.train_metrics, self.val_metrics, self.test_metrics = (_metrics(s) for s in ("train", "val", "test"))

    def configure_model(self) -> None:
        register_output_capture(self)

    def forward(self, batch: dict) -> torch.Tensor:
        extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch).float()
        labels = batch["labels"]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=self.class_weight)
        bs = labels.shape[0]
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=bs)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach().softmax(-1)[..., 1].flatten(), labels.flatten())
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=bs)
        return loss

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        """P(important) per token."""
        return {"idx": batch["idx"], "scores": torch.softmax(self(batch).float(), dim=-1)[..., 1]}

    def configure_optimizers(self):
        h = self.hparams
        groups = build_param_groups(self, h.lr, h.weight_decay, 1.0, encoder_attr="model")
        return configure_adamw(self, groups, h.lr, h.warmup_ratio)

    def export_pretrained(self, directory: str) -> bool:
        self.model.save_pretrained(directory)
        return True
