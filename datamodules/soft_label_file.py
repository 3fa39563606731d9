"""Reading a teacher's soft labels (self-knowledge distillation) and aligning per-example rows by id.

The file is ``soft_labels.npz`` as ``callbacks.soft_labels.SoftLabelWriter`` writes it: ``idx`` [N],
``probs`` [N, C], ``labels`` (class names), ``split`` and ``data_fingerprint`` (of the texts the
teacher saw). Rows are aligned by **example id**: the row number of an example in its split as
``ClassificationDataModule.frames`` builds it (the ``idx`` in every batch and every prediction dump).
For a split read from a file and not cut further, that is the file's data row; the train split
that validation was cut from is renumbered after the cut. Everything is checked here, naming the
file and the ids; the model trusts what comes out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertlab.core.errors import BertlabError
from datamodules.sources import text_fingerprint

SOFT_LABEL_KEYS = ("idx", "probs")


def _preview(values, n: int = 5) -> str:
    values = list(values)
    return ", ".join(map(str, values[:n])) + (", ..." if len(values) > n else "")


def align_by_id(path: str, idx: np.ndarray, values: np.ndarray, n: int, what: str, examples: str) -> np.ndarray:
    """``values`` [len(idx), D] scattered to [n, D] float32 rows by id; every id 0..n-1 exactly once."""
    if not np.issubdtype(idx.dtype, np.integer):
        raise BertlabError(f"{path}: idx must be integers, got {idx.dtype}")
    ids, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise BertlabError(
            f"{path}: {int((counts > 1).sum())} example id(s) appear more than once (e.g. "
            f"{_preview(ids[counts > 1])}); keep one row per id"
        )
    outside = ids[(ids < 0) | (ids >= n)]
    if len(outside):
        raise BertlabError(
            f"{path}: {len(outside)} id(s) beyond the {n} {examples} 0..{n - 1} (e.g. {_preview(outside)}); is it "
            "the file of another split?"
        )
    missing = np.setdiff1d(np.arange(n), ids)
    if len(missing):
        raise BertlabError(
            f"{path}: {what} missing for {len(missing)} of {n} {examples} (ids {_preview(missing)}); the file has "
            f"{len(ids)}"
        )
    out = np.empty((n, values.shape[1]), dtype=np.float32)
    out[idx] = values
    bad = np.flatnonzero(~np.isfinite(out).all(1))
    if len(bad):
        raise BertlabError(f"{path}: {what} with NaN/inf for {len(bad)} of the {examples} (ids {_preview(bad)})")
    return out


def load_soft_labels(path: str, df: pd.DataFrame, label_names: list[str]) -> np.ndarray:
    """[N, C] teacher probabilities for the N training examples, by id; every id must be there exactly once."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise BertlabError(
            f"{path}: cannot read as .npz ({str(e).splitlines()[0]}); write it with SoftLabelWriter"
        ) from None
    missing_keys = [k for k in SOFT_LABEL_KEYS if k not in data]
    if missing_keys:
        raise BertlabError(f"{path}: no array(s) {missing_keys}; a soft-label file holds idx [N] and probs [N, C]")
    idx, probs = data["idx"], data["probs"]
    n, c = len(df), len(label_names)
    if probs.ndim != 2 or idx.ndim != 1 or len(idx) != len(probs):
        raise BertlabError(
            f"{path}: idx has shape {idx.shape} and probs {probs.shape}; expected idx [N] and probs [N, C]"
        )
    if probs.shape[1] != c:
        raise BertlabError(
            f"{path}: {probs.shape[1]} class probabilities per example, but the data has {c} labels {label_names}; "
            "dump the teacher on this label set"
        )
    if "labels" in data and [str(x) for x in data["labels"]] != list(label_names):
        raise BertlabError(
            f"{path}: the teacher's labels {[str(x) for x in data['labels']]} differ from the data's {label_names}"
        )
    if "split" in data and str(data["split"]) != "train":
        raise BertlabError(
            f"{path}: soft labels of the {str(data['split'])!r} split; dump the train split (data.predict_split: train)"
        )
    if "data_fingerprint" in data and str(data["data_fingerprint"]) != text_fingerprint(df):
        raise BertlabError(
            f"{path}: the teacher predicted on different training texts (fingerprint {str(data['data_fingerprint'])} "
            "vs "
            f"{text_fingerprint(df)}); use the same data, split_seed and val_fraction for teacher and student"
        )
    out = align_by_id(path, idx, probs, n, "soft labels", "training examples")
    bad = np.flatnonzero((out < 0).any(1) | (np.abs(out.sum(1) - 1) > 1e-3))
    if len(bad):
        raise BertlabError(
            f"{path}: {len(bad)} row(s) are not probability distributions (ids {_preview(bad)}); write softmax "
            "probabilities"
        )
    return out
