"""Exports that HF has no class for: a ``TextClassifier`` with a non-``cls`` head or knowledge fusion.

The directory is a ``save_pretrained`` of ``modeling_bertlab.BertlabForSequenceClassification``, with the
code it runs copied beside it (``SHIPPED``: the model, its heads and fusions, the text-classification
pipeline and the truncation training cut texts with; the very files training imports) and ``auto_map``
and ``custom_pipelines`` in ``config.json``, so that transformers loads it with ``trust_remote_code=True``.
The encoder's weights keep their usual prefix (``bert.``, ``roberta.``, ...), so
``AutoModel.from_pretrained(DIR)`` still reads the encoder for the next stage. Knowledge computed
from the text travels: ``vader`` by name (the lexicon is the vaderSentiment package), ``encoder`` as
a copy of the second encoder in ``knowledge_encoder/``. Column, file and table knowledge cannot
travel: it belongs to each input, not to the model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from bertlab.core.models import resolve_model_dir
from lightning_modules import modeling_bertlab

AUTO_CLASS = "AutoModelForSequenceClassification"
MODEL_REF = "modeling_bertlab.BertlabForSequenceClassification"
PIPELINE_REF = "pipeline_bertlab.BertlabTextClassificationPipeline"
SHIPPED = (
    "lightning_modules.modeling_bertlab",
    "lightning_modules.heads",
    "lightning_modules.fusions",
    "bertlab.core.pipeline_bertlab",
    "bertlab.core.truncation",
)


def head_spec(head) -> dict:
    """How the export builds ``head`` again: its class path and the options it was built with."""
    cls = type(head)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(head.options)}


def knowledge_spec(knowledge) -> dict | None:
    """Where a data module's ``Knowledge`` vectors come from, as the export records it (None: unknown)."""
    if knowledge is None:
        return None
    if knowledge.provider == "encoder":
        return {
            "source": "encoder",
            "pooling": knowledge.pooling or "mean",
            "max_length": knowledge.max_length or 128,
            "model_dir": modeling_bertlab.KNOWLEDGE_ENCODER_DIR,
        }
    if knowledge.provider is not None:
        return {"source": knowledge.provider}
    source = next(k for k in ("column", "files", "table") if getattr(knowledge, k) is not None)
    return {"source": source, **({"column": knowledge.column} if source == "column" else {})}


def export_custom(
    config, encoder, head, classifier, fusion, spec: dict, directory: str, knowledge=None, dropout: float = 0.0
) -> None:
    """Write the custom-code export of encoder + head + [fusion] + classifier into ``directory``."""
    config.bertlab = {
        **spec,
        "classifier_dropout": float(dropout),
        "features": classifier.in_features,
        "head": head_spec(head),
        "knowledge": knowledge_spec(knowledge),
    }
    config.auto_map = {AUTO_CLASS: MODEL_REF}
    config.custom_pipelines = {"text-classification": {"impl": PIPELINE_REF, "pt": [AUTO_CLASS]}}
    model = modeling_bertlab.BertlabForSequenceClassification(config)
    prefix = model.base_model_prefix
    state = {f"{prefix}.{k}": v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    for name, part in (("head", head), ("classifier", classifier), ("fusion", fusion)):
        if part is not None:
            state.update({f"{name}.{k}": v for k, v in part.state_dict().items()})
    model.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True)
    model.save_pretrained(directory)
    for name in SHIPPED:
        code = importlib.util.find_spec(name).origin
        shutil.copy(code, os.path.join(directory, os.path.basename(code)))
    if knowledge is not None and knowledge.provider == "encoder":
        source = resolve_model_dir(knowledge.model_dir, "knowledge encoder model_dir")
        shutil.copytree(source, os.path.join(directory, modeling_bertlab.KNOWLEDGE_ENCODER_DIR))
