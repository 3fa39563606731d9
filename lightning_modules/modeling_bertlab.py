"""``BertlabForSequenceClassification``: a bertlab classifier as transformers custom code.

This file is copied into every export whose head or knowledge fusion HF has no class for, and
``config.json`` points ``auto_map`` at it, so that
``AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`` and
``pipeline("text-classification", model=DIR, trust_remote_code=True)`` load the export offline.
transformers runs it from the export directory: it imports torch and transformers only, never
bertlab. Its heads and fusions compute exactly what ``lightning_modules/heads.py`` and
``lightning_modules/knowledge.py`` compute (tested number for number).

``config.bertlab`` holds ``head``, ``head_kwargs``, ``knowledge_fusion``, ``knowledge_dim``,
``classifier_dropout`` and ``knowledge`` (where the vectors come from). ``vader`` vectors are
computed from the text (the PyPI package vaderSentiment holds the lexicon); ``encoder`` vectors by
the second encoder saved in ``knowledge_encoder/`` beside this file. Vectors from a data column,
files or a table are the caller's: pass ``knowledge=`` to the model; the pipeline
(``pipeline_bertlab.py``) refuses them.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

KNOWLEDGE_ENCODER_DIR = "knowledge_encoder"
TEXT_SOURCES = ("vader", "encoder")  # knowledge the export can compute from the text alone


def _first_tokens(hidden_states, k: int) -> torch.Tensor:
    return torch.stack([h[:, 0] for h in hidden_states[-k:]], dim=1)


def _token_means(hidden_states, k: int, attention_mask) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
    return torch.stack([(h * mask).sum(1) / mask.sum(1).clamp_min(1.0) for h in hidden_states[-k:]], dim=1)


class ClsHead(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states, attention_mask):
        return self.activation(self.dense(hidden_states[-1][:, 0]))


class MeanHead(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()

    def forward(self, hidden_states, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
        return (hidden_states[-1] * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class LastKHead(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int, k: int = 4, reduce: str = "concat"):
        super().__init__()
        self.k, self.reduce = int(k), reduce

    def forward(self, hidden_states, attention_mask):
        first = _first_tokens(hidden_states, self.k)
        if self.reduce == "concat":
            return first.flatten(1)
        return first.mean(1) if self.reduce == "mean" else first.amax(1)


class LayerCnnHead(nn.Module):
    def __init__(
        self, hidden_size: int, num_layers: int, kernel_sizes=(2, 3, 4), num_filters=32, dropout=0.1, token="first"
    ):
        super().__init__()
        self.num_layers, self.token = num_layers, token
        self.convs = nn.ModuleList(nn.Conv2d(1, num_filters, (int(k), hidden_size)) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, attention_mask):
        if self.token == "mean":
            x = _token_means(hidden_states, self.num_layers, attention_mask).unsqueeze(1)
        else:
            x = _first_tokens(hidden_states, self.num_layers).unsqueeze(1)
        pooled = [torch.relu(conv(x)).squeeze(-1).amax(-1) for conv in self.convs]
        return self.dropout(torch.cat(pooled, dim=-1))


def build_head(name: str, hidden_size: int, num_layers: int, kwargs: dict) -> nn.Module:
    if name in ("concat_last_k", "mean_last_k", "max_last_k"):
        return LastKHead(hidden_size, num_layers, reduce=name.split("_")[0], **kwargs)
    if name == "concat_all":
        return LastKHead(hidden_size, num_layers, k=num_layers, reduce="concat")
    heads = {"cls": ClsHead, "mean": MeanHead, "layer_cnn": LayerCnnHead}
    if name not in heads:
        raise ValueError(f"this bertlab export names an unknown head {name!r}")
    return heads[name](hidden_size, num_layers, **kwargs)


class AfterEncoderFusion(nn.Module):
    site = "after_encoder"

    def __init__(self, knowledge_dim: int, hidden_size: int):
        super().__init__()

    def forward(self, features, knowledge):
        return torch.cat([features, knowledge.to(features.dtype)], dim=-1)


class EmbeddingFusion(nn.Module):
    site = "embedding"

    def __init__(self, knowledge_dim: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(knowledge_dim, hidden_size)

    def forward(self, inputs_embeds, knowledge):
        added = self.proj(knowledge.to(self.proj.weight.dtype)).to(inputs_embeds.dtype)
        first = inputs_embeds[:, :1] + added.unsqueeze(1)
        return torch.cat([first, inputs_embeds[:, 1:]], dim=1)


FUSIONS = {"after_encoder": AfterEncoderFusion, "embedding": EmbeddingFusion}


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
        self.head = build_head(spec["head"], config.hidden_size, config.num_hidden_layers, spec.get("head_kwargs", {}))
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
