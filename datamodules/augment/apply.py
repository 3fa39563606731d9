"""Growing a training frame with augmented copies, cached on disk.

Each augmenter adds ``n_aug`` rows per original row. A new row copies its source row (label,
extra columns) with the text replaced, and records ``source_idx``: the id of the example it
came from, so soft labels, de-duplication and reports can map it back. Original rows have
``source_idx`` equal to their own id. Results are cached under ``cache_dir/augment`` keyed by
(the texts, the augmenter's fingerprint, the seed): a re-run does not augment again, which
matters for back-translation and contextual substitution.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from bertlab.core.files import atomic_path
from bertlab.core.fingerprint import fingerprint
from datamodules.augment.base import Augmenter


def _key(texts: list[str], augmenter: str, seed: int) -> str:
    return fingerprint(augmenter, seed, "\x1e".join(texts), sep="", length=24)


def augmented_texts(augmenter: Augmenter, texts: list[str], seed: int, cache_dir: str) -> list[list[str]]:
    """``n_aug`` variants of every text from one augmenter, cached by its fingerprint, the seed and the texts."""
    path = os.path.join(cache_dir, "augment", _key(texts, augmenter.fingerprint(), seed) + ".json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    variants = augmenter(texts, seed)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(variants, f, ensure_ascii=False)
    return variants


def augment_frame(df: pd.DataFrame, augmenters: list[Augmenter], seed: int, cache_dir: str) -> pd.DataFrame:
    """``df`` followed by every augmenter's rows, with a ``source_idx`` column."""
    base = df.reset_index(drop=True).copy()
    base["source_idx"] = range(len(base))
    texts = base["text"].tolist()
    parts = [base]
    for augmenter in augmenters:
        variants = augmented_texts(augmenter, texts, seed, cache_dir)
        rows = base.loc[[i for i, vs in enumerate(variants) for _ in vs]].copy()
        rows["text"] = [v for vs in variants for v in vs]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)
