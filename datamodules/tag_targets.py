"""Model_b's targets, made from the raw buffer-rule labels as Gu et al.'s code makes them (thunlp/SelectiveMasking
``create_data.py``): a sentence Model_0 misclassifies trains Model_b as all-zero (``misclassified: zeros``) or is
left out (``drop``), and stopwords are never important (``drop_stopwords``; ``datamodules.stopwords``). The raw
labels stay as cached, so both options reuse one labelling run. ``summary`` counts labels and targets per split.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from datamodules.buffer_rule import continuation_table, continuation_word_ids, word_runs
from datamodules.sentence_labels import UNLABELLED, SentenceLabels
from datamodules.stopwords import is_stopword, word_text
from datamodules.token_cache import SpecialTemplate

MISCLASSIFIED = ("zeros", "drop")


class TagTargets:
    """``targets(split) -> (rows, flat)``: Model_b's rows (sentence indices) and its flat targets, 1 / 0, with
    ``UNLABELLED`` at specials (and in misclassified sentences under ``misclassified: drop``)."""

    def __init__(self, tokenizer, misclassified: str = "zeros", drop_stopwords: bool = True):
        self.tokenizer, self.misclassified, self.drop_stopwords = tokenizer, misclassified, drop_stopwords
        template = SpecialTemplate.from_tokenizer(tokenizer)
        self.lo, self.hi = len(template.prefix), len(template.suffix)

    @cached_property
    def _vocab_pieces(self) -> tuple[list[str], np.ndarray]:
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        return pieces, continuation_table(self.tokenizer)

    def _stopwords(self, ids: np.ndarray) -> np.ndarray:
        """Per token of one sentence (specials included): does it belong to a stopword?"""
        pieces, cont = self._vocab_pieces
        out = np.zeros(len(ids), dtype=bool)
        content = ids[self.lo : len(ids) - self.hi]
        for a, b in word_runs(continuation_word_ids(content, cont)):
            if is_stopword(word_text([pieces[int(t)] for t in content[a:b]])):
                out[self.lo + a : self.lo + b] = True
        return out

    def __call__(self, split: SentenceLabels) -> tuple[list[int], np.ndarray]:
        flat, correct = split.labels.copy(), split.correct
        for i in range(len(split)):
            a, b = int(split.offsets[i]), int(split.offsets[i + 1])
            if not correct[i] and self.misclassified == "zeros":
                flat[a + self.lo : b - self.hi] = 0
            if self.drop_stopwords and (flat[a:b] == 1).any():
                flat[a:b][self._stopwords(split.ids[a:b])] = 0
        rows = [i for i in range(len(split)) if (flat[split.offsets[i] : split.offsets[i + 1]] != UNLABELLED).any()]
        return rows, flat

    def summary(self, labels: dict[str, SentenceLabels]) -> dict:
        out = {}
        for split, sl in labels.items():
            known = sl.labels != UNLABELLED
            _, flat = self(sl)
            target = flat != UNLABELLED
            out[split] = {
                "documents": int(len(np.unique(sl.doc))),
                "sentences": len(sl),
                "correct_share": float(sl.correct.mean()) if len(sl) else 0.0,
                "labelled_tokens": int(known.sum()),
                "important_share": float((sl.labels[known] == 1).mean()) if known.any() else 0.0,
                "target_tokens": int(target.sum()),
                "target_important_share": float((flat[target] == 1).mean()) if target.any() else 0.0,
            }
        return out
