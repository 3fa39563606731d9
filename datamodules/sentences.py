"""Splitting documents into sentences, as Gu et al. 2020 do before the buffer rule (``token_labels``).

The authors' code (thunlp/SelectiveMasking, ``data/sc_mask_gen.py``) runs spaCy's rule-based
``sentencizer`` over each document and labels every sentence on its own. Here:

* ``english``: pysbd (Sadvilkar & Neumann 2020, "PySBD: Pragmatic Sentence Boundary Disambiguation"),
  a rule-based splitter that knows abbreviations, decimals and ellipses;
* ``chinese``: a sentence ends after a run of 。！？ (and their ASCII / full-width variants !?！？, with any
  closing quotes or brackets that follow), or at a line break;
* ``auto``: ``chinese`` for a document holding a CJK ideograph, else ``english``;
* ``none``: the whole document is one sentence.

Sentences are stripped; empty ones are dropped.

The corpus scorers (``corpus_scoring``) see token ids, not text: ``TokenSentences`` cuts a token row after
a run of ender tokens (. ! ? 。 ！ ？), unless a ``##`` piece follows or the ender sits between digits
("3.5"); specials ([CLS], [SEP], padding; not [UNK]) cut too. It is the token-level approximation of
the text splitters (it ends a sentence after "Dr." where pysbd does not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from bertlab.core.errors import BertlabError

SPLITTERS = ("auto", "english", "chinese", "none")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# a run of enders, then any closers; or a line break
_CHINESE_END = re.compile(r"[。！？!?]+[」』”’\"')）】》]*|\n+")


@lru_cache(maxsize=1)
def _pysbd():
    try:
        import pysbd
    except ImportError as err:
        raise BertlabError("splitting English documents into sentences needs pysbd: pip install pysbd") from err
    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def chinese_sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in _CHINESE_END.finditer(text):
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def english_sentences(text: str) -> list[str]:
    return [s.strip() for s in _pysbd().segment(text) if s.strip()]


def split_sentences(text: str, splitter: str = "auto") -> list[str]:
    """The sentences of one document."""
    if splitter == "auto":
        splitter = "chinese" if _CJK.search(text) else "english"
    if splitter == "chinese":
        return chinese_sentences(text)
    if splitter == "english":
        return english_sentences(text)
    return [text.strip()] if text.strip() else []


def split_documents(texts: Sequence[str], splitter: str = "auto") -> tuple[list[str], list[int]]:
    """Every document's sentences in order, and the index of the document each came from."""
    check_splitter(splitter)
    sentences, doc = [], []
    for i, text in enumerate(texts):
        parts = split_sentences(str(text), splitter)
        sentences.extend(parts)
        doc.extend([i] * len(parts))
    return sentences, doc


def check_splitter(splitter: str) -> None:
    if splitter not in SPLITTERS:
        raise BertlabError(f"sentence splitter must be one of {', '.join(SPLITTERS)}, got {splitter!r}")


class TokenSentences:
    """Sentence spans of a token row, from per-vocabulary tables of enders, ``##`` pieces and digits."""

    def __init__(self, tokenizer):
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.ender = np.array([bool(p) and all(c in "。！？!?." for c in p) for p in pieces])
        self.continuation = np.array([p.startswith("##") for p in pieces])
        self.digit = np.array([p.removeprefix("##").isdigit() for p in pieces])
        self.specials = np.asarray(sorted(set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}))

    def spans(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """``(start, end)`` of each sentence among the non-special positions of ``ids``."""
        ids = np.asarray(ids)
        content = ~np.isin(ids, self.specials)
        ender, digit = self.ender[ids] & content, self.digit[ids]

        def after(x):  # the value at the next position (False past the end)
            return np.append(x[1:], False)

        prev_digit = np.insert(digit[:-1], 0, False)
        cut = ender & ~after(ender) & ~after(self.continuation[ids]) & ~(prev_digit & after(digit))
        out, start = [], None
        for i in range(len(ids)):
            if not content[i]:
                if start is not None:
                    out.append((start, i))
                start = None
                continue
            if start is None:
                start = i
            if cut[i]:
                out.append((start, i + 1))
                start = None
        if start is not None:
            out.append((start, len(ids)))
        return out
