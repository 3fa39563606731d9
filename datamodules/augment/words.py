"""Split a text into words and put it back together, keeping everything that is not a word.

English (and any space-separated language) is split by a regular expression into words,
numbers and single punctuation marks; each token remembers the whitespace that preceded it,
so untouched parts of a text come back byte for byte and no space appears before punctuation.
Case, punctuation and numbers are kept: unlike the reference EDA code (Wei & Zou 2019), which
lower-cases and drops everything outside a-z. Chinese is segmented with jieba and joined
without spaces (jieba keeps every character, spaces included, so ``"".join`` is the identity).

A token is a *word* (a candidate for replacement, insertion, swap or deletion) when it is made
of letters only, allowing inner apostrophes and hyphens ("don't", "well-known"); CJK
characters count as letters. Numbers and punctuation are never words.
"""

from __future__ import annotations

import logging
import re

LANGUAGES = ("en", "zh")

_LETTERS = r"[^\W\d_]+"
WORD_RE = re.compile(rf"{_LETTERS}(?:['’\-]{_LETTERS})*")
_TOKEN_RE = re.compile(rf"(\s*)({WORD_RE.pattern}|\d+(?:[.,:]\d+)*|\S)")

# One (whitespace before, token) pair per token; joined they give the text back.
Token = list  # [space: str, text: str], mutable so that operations can edit in place


def is_word(token: str) -> bool:
    return WORD_RE.fullmatch(token) is not None


def split_words(text: str, language: str = "en") -> list[Token]:
    if language == "zh":
        return [["", piece] for piece in _jieba().lcut(text)]
    tokens = [[m.group(1), m.group(2)] for m in _TOKEN_RE.finditer(text)]
    if tokens:
        tokens[0][0] = ""
    return tokens


def join_words(tokens: list[Token]) -> str:
    return "".join(space + text for space, text in tokens).strip()


def count_words(text: str, language: str = "en") -> int:
    return sum(is_word(t) for _, t in split_words(text, language))


def word_separator(language: str) -> str:
    return "" if language == "zh" else " "


def match_case(original: str, replacement: str) -> str:
    """Carry the original's capitalisation over: ALL CAPS stays all caps, a capital first letter stays."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


_JIEBA = None


def _jieba():
    global _JIEBA
    if _JIEBA is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _JIEBA = jieba
    return _JIEBA
