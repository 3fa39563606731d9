"""Tokenizer coverage: how much of the training text becomes ``[UNK]``.

An English vocabulary reading Chinese text (or a vocabulary without accents, emoji, ...) turns whole
words into ``[UNK]``; training then runs, and learns little. ``check_coverage`` counts the ``[UNK]``
share of the training tokens (on a deterministic sample) and, above a threshold, names the characters
the vocabulary lacks, most frequent first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from bertlab.core.errors import BertlabError

DEFAULT_MAX_UNK = 0.05
SAMPLE = 2000  # texts looked at: enough for a share, cheap for a large corpus


def unk_share(tokenizer, texts: Sequence[str]) -> tuple[float, int]:
    """(share of ``[UNK]`` among the tokens of ``texts``, number of tokens)."""
    unk = tokenizer.unk_token_id
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    total = sum(len(row) for row in ids)
    unknown = sum(tok == unk for row in ids for tok in row)
    return (unknown / total if total else 0.0), total


def missing_characters(tokenizer, texts: Sequence[str], limit: int = 10) -> list[str]:
    """The characters of ``texts`` the tokenizer turns into ``[UNK]`` on their own, most frequent first."""
    counts = Counter(ch for text in texts for ch in text if not ch.isspace())
    chars = list(counts)
    if not chars:
        return []
    ids = tokenizer(chars, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    missing = [ch for ch, row in zip(chars, ids) if unk in row]
    return sorted(missing, key=lambda ch: -counts[ch])[:limit]


def check_coverage(tokenizer, texts: Sequence[str], where: str, max_unk_fraction: float = DEFAULT_MAX_UNK) -> None:
    """Raise when more than ``max_unk_fraction`` of the tokens of ``texts`` are ``[UNK]`` (1 turns the check off)."""
    if max_unk_fraction >= 1.0 or tokenizer.unk_token_id is None or not len(texts):
        return
    step = max(1, len(texts) // SAMPLE)
    sample = list(texts[::step])
    share, total = unk_share(tokenizer, sample)
    refuse_uncovered(tokenizer, share, total, lambda: sample, where, max_unk_fraction)


def refuse_uncovered(
    tokenizer, share: float, total: int, sample: Callable[[], Sequence[str]], where: str, max_unk_fraction: float
) -> None:
    """Raise when an ``[UNK]`` ``share`` of ``total`` tokens exceeds ``max_unk_fraction``, naming the characters
    missing from ``sample()`` (texts read only to write the message)."""
    if max_unk_fraction >= 1.0 or share <= max_unk_fraction:
        return
    sample = sample()
    chars = missing_characters(tokenizer, sample)
    shown = " ".join(repr(c) for c in chars) if chars else "(none alone: whole words fall out of the vocabulary)"
    raise BertlabError(
        f"{where}: {share:.1%} of {total} training tokens are {tokenizer.unk_token} (limit {max_unk_fraction:.0%}); "
        f"the tokenizer lacks {shown}; use a model whose vocabulary covers the text, or proceed anyway with "
        "--data.max_unk_fraction 1"
    )
