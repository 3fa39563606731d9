"""``BertlabTextClassificationPipeline``: ``text-classification`` for bertlab exports that ship custom code.

Copied into the export beside ``modeling_bertlab.py`` and named in ``config.json``'s
``custom_pipelines``, so ``pipeline("text-classification", model=DIR, trust_remote_code=True)``
builds it. It cuts texts as training did (``tokenization`` in ``bertlab_export.json``: ``max_length``
and ``head`` / ``tail`` / ``head_tail`` truncation, pairs longest-first, as
``datamodules/token_cache.py`` does) and, for a model with knowledge fusion, computes each text's
knowledge vector. Like ``modeling_bertlab.py`` it imports torch and transformers only, never bertlab.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import TextClassificationPipeline

EXPORT_INFO = "bertlab_export.json"


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    raise ValueError("cannot read the special-token template of this tokenizer")


def special_template(tokenizer) -> dict:
    """Where the tokenizer puts its special tokens around one text or a pair, and their token types."""
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    single = tokenizer("a")["input_ids"]
    pair = tokenizer("a", "b", return_token_type_ids=True)
    ids, types = pair["input_ids"], pair.get("token_type_ids") or [0] * len(pair["input_ids"])
    k, i = _find(single, a, 0), _find(ids, a, 0)
    j = _find(ids, b, i + len(a))
    mid, end = i + len(a), j + len(b)
    return {
        "prefix": single[:k],
        "suffix": single[k + len(a) :],
        "middle": ids[mid:j],
        "pair_suffix": ids[end:],
        "pair_types": (types[0], types[i], types[mid] if j > mid else types[i], types[j], types[-1]),
    }


def cut(ids: list[int], keep: int, truncation: str, head_tokens: int) -> list[int]:
    if len(ids) <= keep:
        return ids
    if truncation == "head":
        return ids[:keep]
    if truncation == "tail":
        return ids[len(ids) - keep :] if keep else []
    head = min(head_tokens, keep)
    return ids[:head] + (ids[len(ids) - (keep - head) :] if keep > head else [])


def budgets(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Longest-first split of a pair's token budget."""
    if la + lb <= budget:
        return la, lb
    short = min(la, lb)
    if short <= budget // 2:
        return (budget - lb, lb) if la > lb else (la, budget - la)
    return budget - budget // 2, budget // 2


class BertlabTextClassificationPipeline(TextClassificationPipeline):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.path.join(self.model.name_or_path, EXPORT_INFO)
        info = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}
        self.cutting = info.get("tokenization") or {}
        self.template = special_template(self.tokenizer) if self.cutting else None
        if self.model.fusion is not None:
            self.model.knowledge_vectors(["a"])  # fails now, with its message, when the text alone cannot give them

    def check_model_type(self, supported_models) -> None:
        """The model class is the export's own, so it is in no transformers list; it classifies sequences."""

    def encode(self, text: str, pair: str | None) -> dict:
        """One example's tensors, cut to the training ``max_length`` as training cut it."""
        t, c = self.template, self.cutting
        truncation = c.get("truncation") or "head"
        pair_count = len(t["middle"]) + len(t["pair_suffix"]) if pair is not None else len(t["suffix"])
        budget = int(c["max_length"]) - len(t["prefix"]) - pair_count
        head_tokens = budget // 4 if c.get("head_tokens") is None else int(c["head_tokens"])
        a = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if pair is None:
            ids = t["prefix"] + cut(a, budget, truncation, head_tokens) + t["suffix"]
            types = [0] * len(ids)
        else:
            b = self.tokenizer(pair, add_special_tokens=False)["input_ids"]
            ka, kb = budgets(len(a), len(b), budget)
            a, b = cut(a, ka, truncation, head_tokens), cut(b, kb, truncation, head_tokens)
            p, m, s = t["prefix"], t["middle"], t["pair_suffix"]
            tp, ta, tm, tb, ts = t["pair_types"]
            ids = p + a + m + b + s
            types = [tp] * len(p) + [ta] * len(a) + [tm] * len(m) + [tb] * len(b) + [ts] * len(s)
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
