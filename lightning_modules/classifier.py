"""``TextClassifier``: any HF encoder + a pooling head chosen by ``class_path`` + a linear classifier.

Fine-tuning follows Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification?"):
AdamW without decay on bias/LayerNorm, linear warmup then decay, lr 2e-5 by default, and
optional layer-wise LR decay — all in the shared ``param_groups`` builder.

Recipes, each a config switch that is off by default:

* ``layer_decay`` ξ < 1: layer-wise LR decay (Sun et al. 2019, §5.3).
* ``label_descriptions`` (``LabelDescriptions``: a sentence per label, weight λ > 0): multi-task training; the loss adds
  λ · InfoNCE between each example's pooled vector and its label description's, the
  descriptions encoded by the same encoder + head (``losses.label_description_contrastive``).
* soft labels in the batch (``data.soft_labels_file``): self-knowledge distillation,
  loss = ``losses.kd_loss`` with ``distill.temperature`` and ``distill.alpha`` (Hinton et al. 2015).
* ``knowledge_fusion`` + ``knowledge_dim``: an external vector per example (the batch key
  ``knowledge``) joined after the encoder or at the embeddings (``lightning_modules.knowledge``).
* ``fresh`` (``FreshStart``): head-only warm-up, an lr multiplier for the new parameters, and
  re-initialising the top encoder layers (``lightning_modules.fresh_start``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bertlab.core.errors import BertlabError
from bertlab.core.hf_loading import from_pretrained, register_output_capture
from lightning_modules.classifier_export import export_classifier
from lightning_modules.classifier_options import Distillation, LabelDescriptions, build_head
from lightning_modules.cpu_kernels import FastDropout, use_cpu_kernels
from lightning_modules.fresh_start import (
    FreshStart,
    describe,
    drop_frozen_grads,
    fresh_parameters,
    reinit_top_layers,
    scale_fresh_lr,
)
from lightning_modules.heads import ClsHead, Head
from lightning_modules.knowledge import build_fusion
from lightning_modules.last_layer import encode_first_token, sparse_last_layer
from lightning_modules.losses import kd_loss, label_description_contrastive
from lightning_modules.param_groups import build_param_groups, configure_adamw
from lightning_modules.shared_step import SharedStepModule


class TextClassifier(SharedStepModule):
    def __init__(
        self,
        model_name_or_path: str = "minilm",
        num_labels: int = 2,
        id2label: dict[int, str] | None = None,
        head: Callable[[int, int], Head] | None = None,
        classifier_dropout: float | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        layer_decay: float = 1.0,
        warmup_ratio: float = 0.1,
        compile: bool = False,
        label_descriptions: LabelDescriptions | None = None,
        distill: Distillation | None = None,
        knowledge_dim: int = 0,
        knowledge_fusion: str | None = None,
        fresh: FreshStart | None = None,
    ):
        """
        Args:
            model_name_or_path: a local HF directory (or built-in name ``minilm``); any ``AutoModel`` encoder.
            num_labels, id2label: set from the data by the CLI; they travel into the exported config.
            head: the pooling head by ``class_path`` (``lightning_modules.heads``, or a ``Head`` subclass of your
                own), its options in ``init_args``; a class name alone (``MeanHead``) will do. Default: ``ClsHead``,
                BERT's pooler.
            layer_decay: ξ of layer-wise LR decay (1 = off; Sun et al. found 0.95 best).
            compile: ``torch.compile`` the encoder (not the LightningModule) in ``configure_model``.
            label_descriptions: multi-task training with a description per label (``LabelDescriptions``).
            distill: T and α of ``kd_loss``, used when a training batch carries ``soft_labels``
                (set ``data.soft_labels_file``); default ``Distillation()``.
            knowledge_dim: width of the data's per-example knowledge vectors (0 = none).
            knowledge_fusion: ``after_encoder``, ``embedding`` or null (see ``lightning_modules.knowledge``).
            fresh: how the new head starts (``FreshStart``): a head-only warm-up (LP-FT), an lr multiplier
                for the new parameters, and re-initialising the top k encoder layers (Zhang et al. 2021).
        """
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 < float(layer_decay) <= 1.0:
            raise BertlabError(f"layer_decay must be in (0, 1] (1 = off; Sun et al. use 0.95), got {layer_decay}")
        # typed arguments are kept as given: under LightningCLI, ``hparams`` holds their config (plain dicts)
        self.descriptions, self.distill = label_descriptions, distill or Distillation()
        from transformers import AutoModel

        self.encoder, missing = from_pretrained(AutoModel, model_name_or_path)
        use_cpu_kernels(self.encoder.train())  # from_pretrained leaves it in eval mode
        config = self.encoder.config
        pooler = getattr(self.encoder, "pooler", None)
        if pooler is not None:  # heads read hidden states; an unused pooler would also break DDP
            self.encoder.pooler = None
        self.fresh = FreshStart(**fresh) if isinstance(fresh, dict) else fresh or FreshStart()
        reinit_top_layers(self.encoder, int(self.fresh.reinit_layers))
        self.head = build_head(head, config.hidden_size, config.num_hidden_layers)
        head_loaded = isinstance(self.head, ClsHead) and pooler is not None and not self.fresh.reinit_layers
        if head_loaded and not any(k.startswith("pooler.") for k in missing):
            self.head.init_from_pooler(pooler)  # Zhang et al. re-initialise the pooler with the top layers
        else:
            head_loaded = False
        p_drop = classifier_dropout if classifier_dropout is not None else getattr(config, "hidden_dropout_prob", 0.1)
        self.dropout = FastDropout(p_drop)
        self.fusion = build_fusion(
            knowledge_fusion, knowledge_dim, config.hidden_size, getattr(config, "initializer_range", 0.02)
        )
        features = self.fusion.out_dim(self.head.out_dim) if self.fusion is not None else self.head.out_dim
        self.classifier = nn.Linear(features, num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_labels, average="micro"),
                "f1": MulticlassF1Score(num_labels, average="macro"),
            }
        )
        self.train_metrics, self.val_metrics, self.test_metrics = (
            metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")
        )
        if label_descriptions is not None:
            self._register_descriptions(label_descriptions.descriptions)
        self.fresh_names = {
            n
            for n, _ in self.named_parameters()
            if (n.startswith("encoder.") and n[len("encoder.") :] in missing)
            or not (n.startswith("encoder.") or (head_loaded and n.startswith("head.")))
        }

    def on_fit_start(self) -> None:
        from pytorch_lightning.utilities import rank_zero_info

        line = describe(fresh_parameters(self, self.fresh_names), self.fresh.warmup_steps, "classifier")
        if self.fresh.reinit_layers:
            line += f"; top {self.fresh.reinit_layers} encoder layer(s) re-initialised"
        rank_zero_info(line)

    def on_after_backward(self) -> None:
        if self.global_step < self.fresh.warmup_steps:
            drop_frozen_grads(self, self.fresh_names)

    def label_names(self) -> list[str]:
        id2label = {int(k): str(v) for k, v in (self.hparams.id2label or {}).items()}
        return [id2label.get(i, str(i)) for i in range(self.hparams.num_labels)]

    def _register_descriptions(self, descriptions: dict[str, str]) -> None:
        """Tokenise one description per label id; non-persistent buffers, so checkpoints and exports are unchanged."""
        names = self.label_names()
        given = {str(k): v for k, v in descriptions.items()}
        missing, unknown = [n for n in names if n not in given], sorted(set(given) - set(names))
        if missing or unknown:
            raise BertlabError(
                f"label_descriptions must describe exactly the labels {names}: "
                + "; ".join(
                    filter(None, [f"missing {missing}" if missing else "", f"not labels {unknown}" if unknown else ""])
                )
            )
        empty = [n for n in names if not str(given[n] or "").strip()]
        if empty:
            raise BertlabError(f"label_descriptions for {empty} are empty; write a sentence for each label")
        from bertlab.core.models import load_tokenizer

        tokenizer = load_tokenizer(self.hparams.model_name_or_path)
        limit = min(int(tokenizer.model_max_length), int(getattr(self.encoder.config, "max_position_embeddings", 512)))
        enc = tokenizer(
            [str(given[n]) for n in names], padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in enc:
                self.register_buffer(f"desc_{key}", enc[key], persistent=False)

    def configure_model(self) -> None:
        register_output_capture(self.encoder)
        if self.hparams.compile:
            self.encoder.compile()

    # ------------------------------------------------------------ forward

    def knowledge(self, batch: dict) -> torch.Tensor | None:
        """The batch's knowledge vectors; a model/data mismatch is a ``BertlabError``."""
        vectors = batch.get("knowledge")
        if self.fusion is None:
            if vectors is not None:
                raise BertlabError(
                    "the data attaches knowledge vectors but the model has no knowledge_fusion; set model "
                    "knowledge_fusion and knowledge_dim, or remove data knowledge"
                )
            return None
        if vectors is None:
            raise BertlabError(
                f"knowledge_fusion {self.hparams.knowledge_fusion!r} needs knowledge vectors in every batch; set "
                "`knowledge` on the data module"
            )
        if vectors.ndim != 2 or vectors.shape[-1] != self.hparams.knowledge_dim:
            raise BertlabError(
                f"the data's knowledge vectors have width {vectors.shape[-1]} but the model's knowledge_dim is "
                f"{self.hparams.knowledge_dim}; make them agree"
            )
        return vectors

    def encode(self, batch: dict, knowledge: torch.Tensor | None = None) -> torch.Tensor:
        """The head's pooled vector; ``knowledge`` is injected here only with ``embedding`` fusion."""
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if "token_type_ids" in kwargs and getattr(self.encoder.config, "type_vocab_size", 2) < 2:
            kwargs.pop("token_type_ids")
        if knowledge is not None and self.fusion.site == "embedding":
            embeds = self.encoder.get_input_embeddings()(kwargs.pop("input_ids"))
            kwargs["inputs_embeds"] = self.fusion(embeds, knowledge)
        if self.first_token_only:
            return self.head(encode_first_token(self.encoder, **kwargs), batch["attention_mask"])
        out = self.encoder(**kwargs, output_hidden_states=True, return_dict=True)
        return self.head(out.hidden_states, batch["attention_mask"])

    @property
    def first_token_only(self) -> bool:
        """The head reads only the last layer's first token, so that layer runs for it alone."""
        return isinstance(self.head, ClsHead) and sparse_last_layer(self.encoder)

    def classify(self, pooled: torch.Tensor, knowledge: torch.Tensor | None = None) -> torch.Tensor:
        features = self.dropout(pooled)
        if knowledge is not None and self.fusion.site == "after_encoder":
            features = self.fusion(features, knowledge)
        return self.classifier(features)

    def forward(self, batch: dict) -> torch.Tensor:
        knowledge = self.knowledge(batch)
        return self.classify(self.encode(batch, knowledge), knowledge)

    def description_embeddings(self) -> torch.Tensor:
        """[C, D]: each label's description through the same encoder and head."""
        batch = {
            k: getattr(self, f"desc_{k}")
            for k in ("input_ids", "attention_mask", "token_type_ids")
            if hasattr(self, f"desc_{k}")
        }
        return self.encode(batch)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        knowledge = self.knowledge(batch)
        pooled = self.encode(batch, knowledge)
        logits = self.classify(pooled, knowledge)
        bs = batch["labels"].shape[0]
        if stage == "train" and "soft_labels" in batch:
            loss = kd_loss(logits, batch["soft_labels"], batch["labels"], self.distill.temperature, self.distill.alpha)
        else:
            loss = nn.functional.cross_entropy(logits, batch["labels"])
        desc = self.descriptions
        if stage == "train" and desc is not None and desc.weight > 0:
            aux = label_description_contrastive(
                pooled, self.description_embeddings(), batch["labels"], temperature=desc.temperature
            )
            self.log("train/aux_loss", aux, on_step=True, on_epoch=True, batch_size=bs)
            loss = loss + desc.weight * aux
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
        metrics.update(logits.detach(), batch["labels"])
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=bs)
        return self.test_outputs(loss, logits, batch) if stage == "test" else loss

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        """Probabilities at T = 1: what ``PredictionCSV`` and ``SoftLabelWriter`` write."""
        return {"idx": batch["idx"], "probs": torch.softmax(self(batch).float(), dim=-1)}

    def configure_optimizers(self):
        h = self.hparams
        groups = build_param_groups(self, h.lr, h.weight_decay, h.layer_decay)
        groups = scale_fresh_lr(groups, fresh_parameters(self, self.fresh_names), self.fresh.lr_multiplier)
        return configure_adamw(self, groups, h.lr, h.warmup_ratio)

    # ------------------------------------------------------------ checkpoints and export

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("num_labels")
        if saved is not None and saved != self.hparams.num_labels:
            raise BertlabError(
                f"the checkpoint was trained with {saved} labels but the data has {self.hparams.num_labels} "
                f"({sorted((self.hparams.id2label or {}).values())}); use the training data's label set"
            )

    def export_pretrained(self, directory: str, knowledge=None) -> bool:
        """Write a ``save_pretrained`` directory; returns True when it is HF-native (no custom code); see
        ``classifier_export``. ``knowledge`` is the data's ``Knowledge``."""
        return export_classifier(self, directory, knowledge)
