"""``TextClassifier``: any HF encoder + a pooling head chosen by name + a linear classifier.

Fine-tuning follows Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification?"):
AdamW without decay on bias/LayerNorm, linear warmup then decay, lr 2e-5 by default, and
optional layer-wise LR decay — all in the shared ``param_groups`` builder.
"""

from __future__ import annotations

import copy
import json
import os

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bertlab.errors import BertlabError
from lightning_modules.heads import ClsHead, build_head
from lightning_modules.hf_loading import from_pretrained
from lightning_modules.param_groups import build_param_groups, configure_adamw

HEAD_FILE = "bertlab_head.pt"
HEAD_CONFIG = "bertlab_head.json"


class TextClassifier(pl.LightningModule):
    def __init__(
        self,
        model_name_or_path: str = "minilm",
        num_labels: int = 2,
        id2label: dict[int, str] | None = None,
        head: str = "cls",
        head_kwargs: dict | None = None,
        classifier_dropout: float | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        layer_decay: float = 1.0,
        warmup_ratio: float = 0.1,
        compile: bool = False,
    ):
        """
        Args:
            model_name_or_path: a local HF directory (or built-in name ``minilm``); any ``AutoModel`` encoder.
            num_labels, id2label: set from the data by the CLI; they travel into the exported config.
            head: pooling head by name (see ``lightning_modules.heads.HEADS``).
            layer_decay: ξ of layer-wise LR decay (1 = off; Sun et al. found 0.95 best).
            compile: ``torch.compile`` the encoder (not the LightningModule) in ``configure_model``.
        """
        super().__init__()
        self.save_hyperparameters()
        from transformers import AutoModel

        self.encoder, missing = from_pretrained(AutoModel, model_name_or_path)
        self.encoder.train()  # from_pretrained leaves it in eval mode
        config = self.encoder.config
        pooler = getattr(self.encoder, "pooler", None)
        if pooler is not None:  # heads read hidden states; an unused pooler would also break DDP
            self.encoder.pooler = None
        self.head = build_head(head, config.hidden_size, config.num_hidden_layers, **(head_kwargs or {}))
        if isinstance(self.head, ClsHead) and pooler is not None and not any(k.startswith("pooler.") for k in missing):
            self.head.init_from_pooler(pooler)
        p_drop = classifier_dropout if classifier_dropout is not None else getattr(config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(p_drop)
        self.classifier = nn.Linear(self.head.out_dim, num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)
        metrics = MetricCollection({"acc": MulticlassAccuracy(num_labels, average="micro"), "f1": MulticlassF1Score(num_labels, average="macro")})
        self.train_metrics, self.val_metrics, self.test_metrics = (metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test"))

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.encoder.compile()

    # ------------------------------------------------------------ forward

    def encode(self, batch: dict) -> torch.Tensor:
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if "token_type_ids" in kwargs and getattr(self.encoder.config, "type_vocab_size", 2) < 2:
            kwargs.pop("token_type_ids")
        out = self.encoder(**kwargs, output_hidden_states=True, return_dict=True)
        return self.head(out.hidden_states, batch["attention_mask"])

    def forward(self, batch: dict) -> torch.Tensor:
        return self.classifier(self.dropout(self.encode(batch)))

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        bs = batch["labels"].shape[0]
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach(), batch["labels"])
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=bs)
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return {"idx": batch["idx"], "probs": torch.softmax(self(batch).float(), dim=-1)}

    def configure_optimizers(self):
        h = self.hparams
        groups = build_param_groups(self, h.lr, h.weight_decay, h.layer_decay)
        return configure_adamw(self, groups, h.lr, h.warmup_ratio)

    # ------------------------------------------------------------ checkpoints and export

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("num_labels")
        if saved is not None and saved != self.hparams.num_labels:
            raise BertlabError(f"the checkpoint was trained with {saved} labels but the data has {self.hparams.num_labels} ({sorted((self.hparams.id2label or {}).values())}); use the training data's label set")

    def _hf_config(self):
        config = copy.deepcopy(self.encoder.config)
        id2label = {int(k): str(v) for k, v in (self.hparams.id2label or {i: f"LABEL_{i}" for i in range(self.hparams.num_labels)}).items()}
        config.num_labels = self.hparams.num_labels
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
        return config

    def _native_state(self, hf_model) -> dict | None:
        """State dict for HF's own ``*ForSequenceClassification``, when our head computes exactly what it does."""
        if not isinstance(self.head, ClsHead):
            return None
        prefix = hf_model.base_model_prefix
        state = {f"{prefix}.{k}": v for k, v in self.encoder.state_dict().items() if not k.startswith("pooler.")}
        head, clf = self.head.dense.state_dict(), self.classifier.state_dict()
        base = getattr(hf_model, prefix)
        if getattr(base, "pooler", None) is not None and isinstance(getattr(hf_model, "classifier", None), nn.Linear):  # BERT family
            state.update({f"{prefix}.pooler.dense.{k}": v for k, v in head.items()})
            state.update({f"classifier.{k}": v for k, v in clf.items()})
        elif hasattr(getattr(hf_model, "classifier", None), "out_proj"):  # RoBERTa family: dense, tanh, out_proj
            state.update({f"classifier.dense.{k}": v for k, v in head.items()})
            state.update({f"classifier.out_proj.{k}": v for k, v in clf.items()})
        else:
            return None
        return state if set(state) == set(hf_model.state_dict()) else None

    def export_pretrained(self, directory: str) -> bool:
        """Write a ``save_pretrained`` directory; returns True when it is HF-native (loads with ``pipeline``)."""
        from transformers import AutoModelForSequenceClassification

        config = self._hf_config()
        hf_model = AutoModelForSequenceClassification.from_config(config)
        state = self._native_state(hf_model)
        if state is not None:
            hf_model.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True)
            hf_model.save_pretrained(directory)
            return True
        # Other heads: the encoder in HF form (so later stages load it) plus our head beside it.
        encoder = copy.deepcopy(self.encoder).cpu()
        encoder.config = config
        encoder.save_pretrained(directory)
        torch.save({"head": self.head.state_dict(), "classifier": self.classifier.state_dict()}, os.path.join(directory, HEAD_FILE))
        with open(os.path.join(directory, HEAD_CONFIG), "w") as f:
            json.dump({"head": self.hparams.head, "head_kwargs": self.hparams.head_kwargs or {}, "num_labels": self.hparams.num_labels}, f, indent=1)
        return False
