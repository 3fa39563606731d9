"""The augmenter interface the data module calls, and the small pieces every augmenter shares.

An augmenter turns a list of texts into ``n_aug`` variants per text. It is deterministic for a
seed: each text gets its own ``random.Random`` seeded from the call's seed and a stable hash of
the text (never Python's salted ``hash()``, never the global random state), so a text's variants
do not depend on which other texts share the call. ``fingerprint()`` names everything that
changes the output (settings, thesaurus or model file identity) and serves as a cache key.
"""

from __future__ import annotations

import hashlib
import os
import random
from abc import ABC, abstractmethod

from bertlab.errors import BertlabError


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


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process and on every machine."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


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


def file_identity(path: str) -> str:
    """``path@size:mtime``: changes when the file is replaced or edited."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}@{st.st_size}:{st.st_mtime_ns}"


def dir_identity(path: str) -> str:
    """A model directory's path plus a short digest of its files' names, sizes and mtimes."""
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    parts = [f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in entries if e.is_file()]
    return f"{os.path.realpath(path)}@{stable_hash(*parts):016x}"


def check_model_dir(path: str | None, what: str, auto_class: str) -> str:
    from bertlab.paths import BUILTIN_MODELS, resolve_model_dir

    if path in BUILTIN_MODELS:
        return resolve_model_dir(path)
    if path is None or not os.path.isfile(os.path.join(str(path), "config.json")):
        raise BertlabError(
            f"{what} {path!r} is not a model directory (no config.json there); pass a local directory "
            f"saved with save_pretrained that {auto_class}.from_pretrained can load (no model is downloaded)"
        )
    return str(path)
