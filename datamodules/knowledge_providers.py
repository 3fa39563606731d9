"""Knowledge vectors computed from the text: by a lexicon (VADER) or by running a second, frozen encoder.

* ``vader`` — [pos, neg, neu, compound] of VADER (Hutto & Gilbert 2014) per example; English;
* ``encoder`` — sentence embeddings of a local encoder (``model_dir``; any language; ``pooling``
  mean (default) or cls, texts cut to ``max_length`` tokens, 128 by default).

Both are cached on disk under ``cache_dir/knowledge``, keyed by the texts (and the encoder's files
and settings), and written atomically.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.fingerprint import dir_identity, stable_hash
from bertlab.core.models import resolve_model_dir
from datamodules.sources import text_fingerprint


def _texts(df: pd.DataFrame) -> list[str]:
    return list(df["text"] if "text_pair" not in df else df["text"] + " " + df["text_pair"])


def _save_atomic(path: str, out: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, out)


def vader_features(spec, df: pd.DataFrame, cache_dir: str) -> np.ndarray:
    """[pos, neg, neu, compound] of VADER (Hutto & Gilbert 2014) for each text; cached by the texts' fingerprint."""
    path = os.path.join(cache_dir, "knowledge", f"vader-{text_fingerprint(df)}.npy")
    if os.path.isfile(path):
        return np.load(path)
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise BertlabError(
            "the vader knowledge provider needs the PyPI package vaderSentiment (it bundles the lexicon): pip "
            "install vaderSentiment"
        ) from None
    analyzer = SentimentIntensityAnalyzer()
    scores = [analyzer.polarity_scores(t) for t in _texts(df)]
    out = np.asarray([[s["pos"], s["neg"], s["neu"], s["compound"]] for s in scores], dtype=np.float32).reshape(
        len(df), 4
    )
    _save_atomic(path, out)
    return out


def encoder_embeddings(spec, df: pd.DataFrame, cache_dir: str, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings of a second, frozen encoder: the mask-weighted mean (or the first token)
    of its last hidden states, texts truncated to ``max_length`` tokens. Works for any language the
    encoder's tokenizer covers. Cached by the texts, the directory's files and the settings."""
    import torch
    from transformers import AutoModel

    from bertlab.core.hf_loading import from_pretrained
    from bertlab.core.models import load_tokenizer

    model_dir = resolve_model_dir(spec.model_dir, "knowledge encoder model_dir")
    pooling, max_length = spec.pooling or "mean", spec.max_length or 128
    key = stable_hash(dir_identity(model_dir), pooling, str(max_length), text_fingerprint(df))
    path = os.path.join(cache_dir, "knowledge", f"encoder-{key:016x}.npy")
    if os.path.isfile(path):
        return np.load(path)
    tokenizer = load_tokenizer(model_dir)
    model, _ = from_pretrained(AutoModel, model_dir)
    model.eval()
    texts, parts = _texts(df), []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            if pooling == "cls":
                parts.append(hidden[:, 0])
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                parts.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    width = model.config.hidden_size
    out = torch.cat(parts).float().numpy() if parts else np.zeros((0, width), dtype=np.float32)
    _save_atomic(path, out)
    return out


PROVIDERS = {"vader": vader_features, "encoder": encoder_embeddings}
