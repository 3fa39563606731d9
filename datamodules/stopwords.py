"""Stopwords that never count as important (Gu et al. 2020's labels; ``token_labels``).

The authors' code skips every token spaCy marks ``is_stop`` when it writes the important-token labels
(``SC.create_mask`` in thunlp/SelectiveMasking ``data/sc_mask_gen.py``), so Model_b learns them as 0.
English here is scikit-learn's ``ENGLISH_STOP_WORDS`` (318 words, Glasgow IR group's list), which ships
offline; like spaCy's it holds negations ("not", "no", "never"), so those are dropped too, as in the
authors' labels. Chinese is the short list below: particles, pronouns and conjunctions, no negation
and no degree adverb, since those carry sentiment. A word is matched lower-cased, its WordPiece ``##``
pieces joined; with a character vocabulary each character is a word.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

CHINESE = frozenset(
    "的 了 是 在 和 与 及 也 就 都 而 或 着 之 其 啊 吧 呢 吗 哦 呀 嘛 么 呃 哈 吖 咯 啦 "
    "这 那 我 你 您 他 她 它 们 我们 你们 他们 她们 它们 咱们 自己 这个 那个 这些 那些 这样 那样 "
    "一个 个 被 把 让 给 对 从 向 于 以 为 因 由 跟 同 并 且 而且 或者 还是 就是 因为 所以 如果 虽然 但是 "
    "什么 怎么 哪 哪里 那里 这里 得 地 等 等等 啊呀 嗯".split()
)


@lru_cache(maxsize=1)
def english() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def is_stopword(word: str) -> bool:
    word = word.lower()
    return word in CHINESE or word in english()


def word_text(pieces: Sequence[str]) -> str:
    """A word's text from its tokenizer pieces (``##`` continuations joined to the piece before)."""
    return "".join(p[2:] if p.startswith("##") else p for p in pieces)
