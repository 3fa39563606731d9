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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

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
