"""A linear probe of an encoder (Alain & Bengio 2016): the labelled examples it is fit and scored on, the pooled
features it reads, and the logistic regression itself. ``callbacks.probe.DownstreamProbe`` runs it during
further pre-training.

The examples are a fixed, stratified subset of the task's train split (at most ``max_train_examples``) and its
whole val split, encoded once with the tokenizer being trained with (the encoder's embeddings are indexed by
that vocabulary; the task's own tokenizer only when there is none). The task is a labelled data module,
duck-typed: ``frames``, ``label2id``, ``encode``, ``collator_for`` (``ClassificationDataModule`` has them).
"""

from __future__ import annotations

import numpy as np
import torch

from bertlab.core.errors import BertlabError


def probe_examples(task, tokenizer, max_train_examples: int, seed: int) -> dict:
    """``{"train": (rows, label ids), "val": (rows, label ids), "collate": collator}`` of ``task``, encoded by
    ``tokenizer`` (None: the task's own); refused when a labelled split is missing or train has one label."""
    from sklearn.model_selection import train_test_split

    frames = task.frames
    missing = [s for s in ("train", "val") if s not in frames or "label" not in frames[s]]
    if missing:
        raise BertlabError(
            f"DownstreamProbe: the task has no labelled {' or '.join(missing)} split; "
            "give `train_file` (and `val_file` or `val_fraction`) or a built-in `source`"
        )
    tokenizer = tokenizer or task.tokenizer
    train = frames["train"]
    if train["label"].nunique() < 2:
        raise BertlabError(
            f"DownstreamProbe: the task's train split has one label ({train['label'].iloc[0]!r}); "
            "a probe needs two or more"
        )
    if len(train) > max_train_examples:
        strat = train["label"] if train["label"].value_counts().min() >= 2 else None
        train, _ = train_test_split(train, train_size=max_train_examples, random_state=seed, stratify=strat)
    # the task's default 128 may exceed a small model's positions
    max_length = min(task.hparams.max_length, tokenizer.model_max_length)
    out = {}
    for split, df in (("train", train), ("val", frames["val"])):
        rows = task.encode(df, tokenizer, max_length)
        out[split] = (rows, df["label"].map(task.label2id).to_numpy(np.int64))
    out["collate"] = task.collator_for(tokenizer)
    return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[B, T, H] -> [B, H]``: the mean over real tokens, or the first ([CLS]) token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


def fit_logreg(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int = 0) -> float:
    """Val accuracy of a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    clf.fit(x_train, y_train)
    return float((clf.predict(x_val) == y_val).mean())
