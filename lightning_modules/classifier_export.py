"""A ``TextClassifier`` as a ``save_pretrained`` directory: HF's own ``AutoModelForSequenceClassification`` when
the model computes exactly what HF's does (the [CLS] pooler and a linear classifier of the BERT or RoBERTa
family, no knowledge fusion), else ``modeling_bertlab`` custom code (``custom_export``)."""

from __future__ import annotations

import copy

from torch import nn

from lightning_modules.custom_export import export_custom
from lightning_modules.heads import ClsHead


def hf_config(model):
    """The encoder's config with the classifier's labels (``num_labels``, ``id2label``, ``label2id``)."""
    config = copy.deepcopy(model.encoder.config)
    id2label = {
        int(k): str(v)
        for k, v in (model.hparams.id2label or {i: f"LABEL_{i}" for i in range(model.hparams.num_labels)}).items()
    }
    config.num_labels = model.hparams.num_labels
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    return config


def native_state(model, hf_model) -> dict | None:
    """State dict for HF's own ``*ForSequenceClassification``, when our head computes exactly what it does."""
    if not isinstance(model.head, ClsHead) or model.fusion is not None:
        return None
    prefix = hf_model.base_model_prefix
    state = {f"{prefix}.{k}": v for k, v in model.encoder.state_dict().items() if not k.startswith("pooler.")}
    head, clf = model.head.dense.state_dict(), model.classifier.state_dict()
    base = getattr(hf_model, prefix)
    if getattr(base, "pooler", None) is not None and isinstance(
        getattr(hf_model, "classifier", None), nn.Linear
    ):  # BERT family
        state.update({f"{prefix}.pooler.dense.{k}": v for k, v in head.items()})
        state.update({f"classifier.{k}": v for k, v in clf.items()})
    elif hasattr(getattr(hf_model, "classifier", None), "out_proj"):  # RoBERTa family: dense, tanh, out_proj
        state.update({f"classifier.dense.{k}": v for k, v in head.items()})
        state.update({f"classifier.out_proj.{k}": v for k, v in clf.items()})
    else:
        return None
    return state if set(state) == set(hf_model.state_dict()) else None


def export_classifier(model, directory: str, knowledge=None) -> bool:
    """Write a ``save_pretrained`` directory; returns True when it is HF-native (no custom code).

    Other heads and knowledge fusion export ``modeling_bertlab`` custom code (``custom_export``); ``knowledge``
    is the data's ``Knowledge``, which says whether the vectors can travel with the export.
    """
    from transformers import AutoModelForSequenceClassification

    config = hf_config(model)
    hf_model = AutoModelForSequenceClassification.from_config(config)
    state = native_state(model, hf_model)
    if state is not None:
        hf_model.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True)
        hf_model.save_pretrained(directory)
        return True
    h = model.hparams
    spec = {
        "knowledge_fusion": h.knowledge_fusion,
        "knowledge_dim": h.knowledge_dim,
    }
    export_custom(
        config, model.encoder, model.head, model.classifier, model.fusion, spec, directory, knowledge, model.dropout.p
    )
    return False
