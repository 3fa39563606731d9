"""Maskers: the one place that decides which tokens an MLM predicts.

A masker is a collator, ``masker(features) -> batch``. Each feature holds ``input_ids`` (with
[CLS]/[SEP]) and optionally ``attention_mask``, ``token_type_ids``, ``special_tokens_mask``,
``word_ids`` (-1 at specials), ``idx`` and ``scores``. The batch holds ``input_ids`` (corrupted),
``attention_mask``, ``labels`` (the original id where the model must predict, -100 elsewhere) and
``token_type_ids`` when given; padding is dynamic and on the right.

Selected tokens follow BERT's 80/10/10 rule (Devlin et al. 2019, §3.1): ``replace_prob`` become
[MASK], ``random_prob`` a random non-special token, ``keep_prob`` stay. Specials and padding are
never selected. All randomness comes from the masker's own ``torch.Generator``, so the global
torch seed does not change the masks. Every masker works on the padded batch with tensor ops.
"""

from __future__ import annotations

from bertlab.core.errors import BertlabError
from datamodules.maskers.dynamic import DynamicMasker, StaticMasker
from datamodules.maskers.selective import EntropyMasker, SelectiveMasker
from datamodules.maskers.words import SpanMasker, WholeWordMasker, jieba_word_ids, wordpiece_word_ids

__all__ = [
    "MASKERS",
    "DynamicMasker",
    "EntropyMasker",
    "SelectiveMasker",
    "SpanMasker",
    "StaticMasker",
    "WholeWordMasker",
    "build_masker",
    "jieba_word_ids",
    "wordpiece_word_ids",
]


MASKERS: dict[str, type[DynamicMasker]] = {
    "dynamic": DynamicMasker,
    "static": StaticMasker,
    "whole_word": WholeWordMasker,
    "span": SpanMasker,
    "selective": SelectiveMasker,
    "entropy": EntropyMasker,
}


def build_masker(name: str, tokenizer, **kwargs) -> DynamicMasker:
    if name not in MASKERS:
        raise BertlabError(f"unknown masker {name!r}; known maskers: {', '.join(sorted(MASKERS))}")
    return MASKERS[name](tokenizer, **kwargs)
