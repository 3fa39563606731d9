"""``BertlabTextClassificationPipeline``: ``text-classification`` for bertlab exports that ship custom code.

Copied into the export beside ``modeling_bertlab.py`` and named in ``config.json``'s
``custom_pipelines``, so ``pipeline("text-classification", model=DIR, trust_remote_code=True)``
builds it. It cuts texts as training did (``tokenization`` in ``bertlab_export.json``), with
``truncation.py``, which ships beside it and is the very file training's data modules cut with.
Like ``modeling_bertlab.py`` it imports torch, transformers and its sibling only, never bertlab; it
sits in the base beside ``truncation.py`` because transformers resolves a shipped file's imports only
relatively, and the data may not import ``lightning_modules``.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import TextClassificationPipeline

from .truncation import SpecialTemplate

EXPORT_INFO = "bertlab_export.json"


class BertlabTextClassificationPipeline(TextClassificationPipeline):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.path.join(self.model.name_or_path, EXPORT_INFO)
        info = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}
        self.cutting = info.get("tokenization") or {}
        self.template = SpecialTemplate.from_tokenizer(self.tokenizer) if self.cutting else None
        if self.model.fusion is not None:
            self.model.knowledge_vectors(["a"])  # fails now, with its message, when the text alone cannot give them

    def check_model_type(self, supported_models) -> None:
        """The model class is the export's own, so it is in no transformers list; it classifies sequences."""

    def encode(self, text: str, pair: str | None) -> dict:
        """One example's tensors, cut to the training ``max_length`` as training cut it."""
        t, c = self.template, self.cutting
        budget = int(c["max_length"]) - t.n_special(pair is not None)
        head_tokens = budget // 4 if c.get("head_tokens") is None else int(c["head_tokens"])
        a = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        b = self.tokenizer(pair, add_special_tokens=False)["input_ids"] if pair is not None else None
        ids, types = t.join(a, b, budget, c.get("truncation") or "head", head_tokens)
        types = types or [0] * len(ids)
        out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        if "token_type_ids" in self.tokenizer.model_input_names:
            out["token_type_ids"] = torch.tensor([types])
        return out

    def preprocess(self, inputs, **tokenizer_kwargs):
        text, pair = (inputs["text"], inputs.get("text_pair")) if isinstance(inputs, dict) else (inputs, None)
        if self.cutting:
            model_inputs = self.encode(text, pair)
        else:
            model_inputs = super().preprocess(inputs, **tokenizer_kwargs)
        if self.model.fusion is not None:
            model_inputs["knowledge"] = self.model.knowledge_vectors([text], [pair] if pair is not None else None)
        return model_inputs
