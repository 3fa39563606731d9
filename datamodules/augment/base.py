"""The augmenter interface the data module calls, and the small pieces every augmenter shares.

An augmenter turns a list of texts into ``n_aug`` variants per text. It is deterministic for a
seed: each text gets its own ``random.Random`` seeded from the call's seed and a stable hash of
the text (never Python's salted ``hash()``, never the global random state), so a text's variants
do not depend on which other texts share the call. ``fingerprint()`` names everything that
changes the output (settings, thesaurus or model file identity) and serves as a cache key.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from bertlab.core.errors import BertlabError
from bertlab.core.fingerprint import stable_hash


class Augmenter(ABC):
    """``augmenter(texts, seed)`` → for each text, exactly ``n_aug`` augmented variants.

    Texts too short to change (empty, or a single word) come back unchanged ``n_aug`` times.
    """

    n_aug: int

    @abstractmethod
    def __call__(self, texts: list[str], seed: int) -> list[list[str]]: ...

    @abstractmethod
    def fingerprint(self) -> str: ...

    def __repr__(self) -> str:
        return self.fingerprint()


def text_rng(seed: int, text: str) -> random.Random:
    return random.Random(seed ^ stable_hash(text))


def check_rate(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise BertlabError(f"augmentation rate {name}={value!r} is outside [0, 1]; set it to a fraction such as 0.1")
    return float(value)


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BertlabError(f"augmentation setting {name}={value!r} must be a whole number ≥ 1")
    return value
