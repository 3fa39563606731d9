"""How a text (or a pair) is cut to ``max_length`` tokens: the one implementation, for training and for exports.

``datamodules`` tokenise with it, and the export ships this very file beside ``pipeline_bertlab.py``, so that
``pipeline("text-classification", model=EXPORT, trust_remote_code=True)`` cuts new texts as training cut
them. It therefore imports nothing but the standard library (never bertlab): transformers runs it from the
export directory. It lives in the base because data and exports both need it, and data may not import
``lightning_modules``.

Truncation (Sun et al. 2019, §5.3.1): ``head`` keeps the first tokens, ``tail`` the last, ``head_tail`` the
first ``head_tokens`` and the rest from the end (128 + 382 was best on IMDb). A pair shares its budget
longest-first, as HF's ``truncation="longest_first"`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

TRUNCATIONS = ("head", "tail", "head_tail")


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    raise ValueError("cannot read the special-token template of this tokenizer")


@dataclass(frozen=True)
class SpecialTemplate:
    """Where a tokenizer puts its special tokens: ``prefix A suffix`` and ``prefix A middle B pair_suffix``."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    middle: tuple[int, ...]
    pair_suffix: tuple[int, ...]
    pair_types: tuple[int, ...]  # token type of each pair position: prefix, A, middle, B, pair_suffix

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialTemplate:
        """Read the template off the tokenizer; a ``ValueError`` when its specials are not around the text."""
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        single = tokenizer("a")["input_ids"]
        pair = tokenizer("a", "b", return_token_type_ids=True)
        ids, types = pair["input_ids"], pair.get("token_type_ids") or [0] * len(pair["input_ids"])
        k = _find(single, a, 0)
        i = _find(ids, a, 0)
        j = _find(ids, b, i + len(a))
        mid, end = i + len(a), j + len(b)
        return cls(
            prefix=tuple(single[:k]),
            suffix=tuple(single[k + len(a) :]),
            middle=tuple(ids[mid:j]),
            pair_suffix=tuple(ids[end:]),
            pair_types=(types[0], types[i], types[mid] if j > mid else types[i], types[j], types[-1]),
        )

    def n_special(self, pair: bool) -> int:
        return len(self.prefix) + (len(self.middle) + len(self.pair_suffix) if pair else len(self.suffix))

    def join(
        self, a: list[int], b: list[int] | None, budget: int, truncation: str, head_tokens: int
    ) -> tuple[list[int], list[int] | None]:
        """One example's ids (and, for a pair, token types): ``a`` [and ``b``] cut to ``budget`` text tokens,
        specials around them."""
        p = list(self.prefix)
        if b is None:
            return p + cut(a, budget, truncation, head_tokens) + list(self.suffix), None
        m, s = list(self.middle), list(self.pair_suffix)
        ka, kb = budgets(len(a), len(b), budget)
        a, b = cut(a, ka, truncation, head_tokens), cut(b, kb, truncation, head_tokens)
        tp, ta, tm, tb, ts = self.pair_types
        return p + a + m + b + s, [tp] * len(p) + [ta] * len(a) + [tm] * len(m) + [tb] * len(b) + [ts] * len(s)


def cut(ids: list[int], keep: int, truncation: str, head_tokens: int) -> list[int]:
    """``ids`` cut to ``keep`` tokens: the first (``head``), the last (``tail``) or both ends (``head_tail``)."""
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
