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

A config picks one by ``class_path`` (``data.init_args.masker``), so a masker of your own is a
``DynamicMasker`` subclass in any importable file; there is no registry (docs/extending.md).
"""

from __future__ import annotations

from datamodules.maskers.dynamic import DynamicMasker, StaticMasker
from datamodules.maskers.selective import EntropyMasker, SelectiveMasker
from datamodules.maskers.words import SpanMasker, WholeWordMasker, jieba_word_ids, wordpiece_word_ids

__all__ = [
    "DynamicMasker",
    "EntropyMasker",
    "SelectiveMasker",
    "SpanMasker",
    "StaticMasker",
    "WholeWordMasker",
    "jieba_word_ids",
    "wordpiece_word_ids",
]
