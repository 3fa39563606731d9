"""``BertlabForSequenceClassification``: a bertlab classifier as transformers custom code.

This file is copied into every export whose head or knowledge fusion HF has no class for, with
``heads.py`` and ``fusions.py`` beside it, and ``config.json`` points ``auto_map`` at it, so that
``AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`` and
``pipeline("text-classification", model=DIR, trust_remote_code=True)`` load the export offline.
transformers runs it from the export directory: it imports torch, transformers and its two siblings
only, never bertlab. Training builds its heads and fusions from those same two files, so there is
nothing to keep in step.

``config.bertlab`` holds ``head`` (``class_path`` and ``init_args``), ``knowledge_fusion``,
``knowledge_dim``, ``classifier_dropout`` and ``knowledge`` (where the vectors come from). ``vader`` vectors are
computed from the text (the PyPI package vaderSentiment holds the lexicon); ``encoder`` vectors by
the second encoder saved in ``knowledge_encoder/`` beside this file. Vectors from a data column,
files or a table are the caller's: pass ``knowledge=`` to the model; the pipeline
(``pipeline_bertlab.py``) refuses them.
"""

from __future__ import annotations

import importlib
import os

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .fusions import FUSIONS
from .heads import Head

SHIPPED_HEADS = "lightning_modules.heads"  # where bertlab's own heads live in training; heads.py beside this file

KNOWLEDGE_ENCODER_DIR = "knowledge_encoder"
TEXT_SOURCES = ("vader", "encoder")  # knowledge the export can compute from the text alone


def head_class(class_path: str) -> type[nn.Module]:
    """The head class a ``class_path`` names: bertlab's own from ``heads.py`` beside this file, any other from
    its module, which must then be importable wherever the export is loaded."""
    module, _, name = class_path.rpartition(".")
    if module == SHIPPED_HEADS:
        module = Head.__module__
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ImportError(
            f"this bertlab export's head is {class_path}, which is not one of bertlab's heads; make its module "
            "importable (on PYTHONPATH) where you load the export"
        ) from None


class BertlabForSequenceClassification(PreTrainedModel):
    """Encoder (any ``AutoModel``, under its own ``base_model_prefix``) + head + [fusion] + linear classifier."""

    config_class = PreTrainedConfig
    base_model_prefix = ""

    def __init__(self, config):
        super().__init__(config)
        spec = config.bertlab
        encoder = AutoModel.from_config(config)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # bertlab's heads read hidden states; the export has no pooler weights
        self.base_model_prefix = encoder.base_model_prefix or "encoder"
        setattr(self, self.base_model_prefix, encoder)
        head = spec["head"]
        if not isinstance(head, dict):
            raise ValueError(
                f"this export names its head {head!r}, as bertlab did before heads were chosen by class_path; load "
                "it with trust_remote_code=True (it runs the export's own copy of this file) or export it again"
            )
        self.head = head_class(head["class_path"])(config.hidden_size, config.num_hidden_layers, **head["init_args"])
        self.dropout = nn.Dropout(spec.get("classifier_dropout") or 0.0)
        fusion, dim = spec.get("knowledge_fusion"), int(spec.get("knowledge_dim") or 0)
        self.fusion = FUSIONS[fusion](dim, config.hidden_size) if fusion else None
        self.classifier = nn.Linear(int(spec["features"]), config.num_labels)
        source = (spec.get("knowledge") or {}).get("source")
        if source == "vader":
            try:
                import vaderSentiment  # noqa: F401
            except ImportError:
                raise ImportError(
                    "this bertlab export fuses VADER knowledge: pip install vaderSentiment (it holds the lexicon)"
                ) from None
        self._knowledge_encoder = None
        self.post_init()

    def knowledge_vectors(self, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
        """[N, knowledge_dim] vectors computed from the text, as bertlab computed them in training."""
        spec = self.config.bertlab.get("knowledge") or {}
        source = spec.get("source")
        if source not in TEXT_SOURCES:
            raise ValueError(
                f"this bertlab export fuses knowledge from {source or 'an unrecorded source'}, which the text alone "
                "does not give; compute the vectors yourself and call the model with knowledge=[N, "
                f"{self.config.bertlab['knowledge_dim']}]"
            )
        joined = [t if not pairs or p is None else t + " " + p for t, p in zip(texts, pairs or [None] * len(texts))]
        if source == "vader":
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            scores = [SentimentIntensityAnalyzer().polarity_scores(t) for t in joined]
            return torch.tensor([[s["pos"], s["neg"], s["neu"], s["compound"]] for s in scores], dtype=torch.float32)
        if self._knowledge_encoder is None:
            from transformers import AutoTokenizer

            path = os.path.join(self.name_or_path, KNOWLEDGE_ENCODER_DIR)
            self._knowledge_encoder = (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval())
        tokenizer, model = self._knowledge_encoder
        enc = tokenizer(joined, truncation=True, max_length=spec["max_length"], padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        if spec["pooling"] == "cls":
            return hidden[:, 0].float()
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float()

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, knowledge=None, labels=None, **kwargs
    ) -> SequenceClassifierOutput:
        encoder = getattr(self, self.base_model_prefix)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if (self.fusion is None) != (knowledge is None):
            raise ValueError(
                "this bertlab model fuses knowledge: pass knowledge=[N, D]"
                if self.fusion is not None
                else "this bertlab model has no knowledge fusion; drop knowledge="
            )
        inputs = {"attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.config, "type_vocab_size", 2) >= 2:
            inputs["token_type_ids"] = token_type_ids
        if self.fusion is not None and self.fusion.site == "embedding":
            inputs["inputs_embeds"] = self.fusion(encoder.get_input_embeddings()(input_ids), knowledge)
        else:
            inputs["input_ids"] = input_ids
        out = encoder(**inputs, output_hidden_states=True, return_dict=True)
        features = self.dropout(self.head(out.hidden_states, attention_mask))
        if self.fusion is not None and self.fusion.site == "after_encoder":
            features = self.fusion(features, knowledge)
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
