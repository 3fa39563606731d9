"""``TokenLabelDataModule``: Gu et al.'s important-token labels as Model_b's training data.

Gu et al. 2020 ("Train No Evil", §3.1) label the tokens of the task's labelled sentences with
Model_0 (a classifier fine-tuned on the task) by the buffer rule (``datamodules.buffer_rule``), and
train a token classifier, Model_b, on those labels. This module runs the rule once and caches the
labels on disk, keyed by the task's texts, the tokenizer, ``max_length``/truncation, the *content* of
Model_0 (a retrained Model_0 at the same path is a new key), δ, the unit and the sentence cap; a second
run with the same inputs reads the file back (``labels_built_now`` says which happened).

Splits: the correctly classified *train* sentences, minus ``val_fraction`` held out for checkpoint
selection, train Model_b; the task's *val* sentences, labelled the same way and never trained on,
are the test split on which ``bertlab test`` reports Model_b's token-level F1.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cached_property

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bertlab.core.errors import BertlabError
from bertlab.core.models import load_tokenizer
from datamodules import sources
from datamodules.buffer_rule import buffer_rule_labels, continuation_table, continuation_word_ids
from datamodules.splits import Splits
from datamodules.task_scorer import check_same_tokenizer, classifier_probs, load_sequence_classifier, model_fingerprint
from datamodules.token_cache import SpecialTemplate, cache_key, default_cache_dir, tokenizer_fingerprint

UNLABELLED = -1  # sentences Model_0 misclassifies, and those beyond ``max_sentences``
TAGS = {0: "other", 1: "important"}


class TokenLabelDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str = "minilm",
        task: Splits | None = None,
        model0: str | None = None,
        max_length: int = 128,
        truncation: str = "head",
        delta: float = 0.01,
        whole_word: bool = True,
        max_sentences: int | None = None,
        label_batch_size: int = 64,
        val_fraction: float = 0.1,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        """
        Args:
            tokenizer: Model_b's tokenizer (the CLI links it to the model's path); Model_0's must be the same.
            task: the labelled task's ``Splits`` (the split Model_0 was fine-tuned with, e.g. ``{source: fine_food}``).
            max_length, truncation: as in Model_0's classifier config.
            model0: Model_0, a fine-tuned sequence classifier directory whose labels are the task's.
            delta: δ of the buffer rule, in (0, 1): a word is important when P(y | s) − P(y | s′ w) < δ (signed).
            whole_word: words (WordPiece ``##`` pieces joined) are the buffer's units; else single tokens.
            max_sentences: label at most this many train sentences (a deterministic sample), for cheaper runs.
            label_batch_size: sentences whose candidates share one forward pass of Model_0.
            val_fraction: labelled train sentences held out to select Model_b's checkpoint.
        """
        super().__init__()
        self.save_hyperparameters()
        if not task or not model0:
            raise BertlabError("TokenLabelDataModule needs the labelled `task` and `model0`, the task's classifier")
        if not 0.0 < float(delta) < 1.0:
            raise BertlabError(f"delta (δ of the buffer rule) must be in (0, 1), got {delta}; Gu et al. use 0.01")
        if not 0.0 < float(val_fraction) < 1.0:
            raise BertlabError(f"val_fraction must be in (0, 1), got {val_fraction}")
        # typed arguments are kept as given: under LightningCLI, ``hparams`` holds their config (plain dicts)
        self.task = task if isinstance(task, Splits) else Splits(**task)
        self.cache_dir = cache_dir or default_cache_dir()
        self.datasets: dict[str, Dataset] = {}
        self.labels_built_now: bool | None = None

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.hparams.tokenizer)

    # The tag set, linked into the model's arguments by the CLI.
    num_labels = len(TAGS)
    id2label = TAGS

    @cached_property
    def task_data(self):
        from datamodules.classification import ClassificationDataModule

        h = self.hparams
        return ClassificationDataModule(
            h.tokenizer, splits=self.task, max_length=h.max_length, truncation=h.truncation, cache_dir=self.cache_dir
        )

    def _train_rows(self, n: int) -> np.ndarray:
        cap = self.hparams.max_sentences
        if not cap or cap >= n:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.hparams.seed).permutation(n)[:cap])

    def _label_split(self, split: str, model, template: SpecialTemplate) -> np.ndarray:
        """Flat labels aligned with the split's token arrays: 1 / 0 / UNLABELLED (also at specials)."""
        ds = self.task_data._dataset(split)
        arrays, gold = ds.arrays, ds.extras["labels"]
        rows = self._train_rows(len(arrays)) if split == "train" else np.arange(len(arrays))
        lo, hi = len(template.prefix), len(template.suffix)
        cont = continuation_table(self.tokenizer)
        full = [arrays.get(int(i))["input_ids"] for i in rows]
        content = [ids[lo : len(ids) - hi] for ids in full]
        words = [continuation_word_ids(c, cont) if self.hparams.whole_word else list(range(len(c))) for c in content]
        labels = buffer_rule_labels(
            classifier_probs(model),
            [c.tolist() for c in content],
            words,
            [int(gold[i]) for i in rows],
            template.prefix,
            template.suffix,
            self.tokenizer.pad_token_id,
            delta=self.hparams.delta,
            batch_size=self.hparams.label_batch_size,
        )
        flat = np.full(int(arrays.offsets[-1]), UNLABELLED, dtype=np.int8)
        for i, lab in zip(rows, labels):
            if lab is not None:
                start = int(arrays.offsets[i]) + lo
                flat[start : start + len(lab)] = lab
        return flat

    @cached_property
    def labels(self) -> dict[str, np.ndarray]:
        """``{"train": flat, "val": flat}``, read from the cache or computed by the buffer rule."""
        h, task = self.hparams, self.task_data
        frames = task.frames
        if "text_pair" in frames["train"]:
            raise BertlabError("selective masking labels single sentences; the task has a `text_pair_column`")
        check_same_tokenizer(self.tokenizer, h.model0, "Model_0")
        key = cache_key(
            kind="token_labels",
            data={s: sources.text_fingerprint(frames[s]) for s in ("train", "val")},
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_length=task.hparams.max_length,
            truncation=task.hparams.truncation,
            head_tokens=task.hparams.head_tokens,
            model0=model_fingerprint(h.model0),
            delta=float(h.delta),
            rule="gu_signed",  # labels made by the old |·| < δ rule are not reused
            whole_word=h.whole_word,
            max_sentences=h.max_sentences,
            seed=h.seed,
        )
        path = os.path.join(self.cache_dir, "token_labels", f"{key}.npz")
        self.labels_path = path
        if os.path.isfile(path):
            self.labels_built_now = False
            with np.load(path) as f:
                out = {s: f[s] for s in ("train", "val")}
        else:
            model = load_sequence_classifier(h.model0, task.label_names, role="Model_0")
            template = SpecialTemplate.from_tokenizer(self.tokenizer)
            out = {s: self._label_split(s, model, template) for s in ("train", "val")}
            _save_npz(path, out, self.summary(out))
            self.labels_built_now = True
        self._check(out["train"])
        return out

    def _check(self, train: np.ndarray) -> None:
        if not (train != UNLABELLED).any():
            raise BertlabError(
                f"Model_0 {self.hparams.model0!r} classifies none of the labelled train sentences correctly; "
                "nothing to learn important tokens from (is it fine-tuned on this task?)"
            )
        if not (train == 1).any():
            raise BertlabError(
                f"no token scores as important at δ = {self.hparams.delta} on the task's train sentences; "
                "raise `delta` (a word is important when P(y | s) − P(y | s′ w) < δ)"
            )

    def summary(self, labels: dict[str, np.ndarray] | None = None) -> dict:
        labels = labels or self.labels
        out = {}
        for split, flat in labels.items():
            known = flat != UNLABELLED
            out[split] = {"labelled_tokens": int(known.sum()), "important_share": float((flat[known] == 1).mean())}
        return out

    # ------------------------------------------------------------ datasets

    def prepare_data(self) -> None:
        self.labels  # noqa: B018 - label (or read) once, and fail on bad input before any training

    def _sentences(self, split: str) -> list[int]:
        arrays, flat = self.task_data._dataset(split).arrays, self.labels[split]
        return [i for i in range(len(arrays)) if (flat[arrays.offsets[i] : arrays.offsets[i + 1]] != UNLABELLED).any()]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        labelled = self._sentences("train")
        order = np.random.default_rng(self.hparams.seed).permutation(len(labelled))
        n_val = max(1, int(round(len(labelled) * self.hparams.val_fraction)))
        if len(labelled) - n_val < 1:
            raise BertlabError(f"only {len(labelled)} labelled sentence(s): too few to hold out a validation share")
        held = {labelled[i] for i in order[:n_val]}
        train_arrays = self.task_data._dataset("train").arrays
        self.datasets["train"] = _TaggedDataset(
            train_arrays, self.labels["train"], [i for i in labelled if i not in held]
        )
        self.datasets["val"] = _TaggedDataset(train_arrays, self.labels["train"], sorted(held))
        val_arrays = self.task_data._dataset("val").arrays
        self.datasets["test"] = _TaggedDataset(val_arrays, self.labels["val"], self._sentences("val"))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self.hparams
        return DataLoader(
            self.datasets[split],
            batch_size=h.batch_size if shuffle else (h.eval_batch_size or h.batch_size),
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(h.seed) if shuffle else None,
            collate_fn=_TagCollator(self.tokenizer.pad_token_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


class _TaggedDataset(Dataset):
    def __init__(self, arrays, flat_labels: np.ndarray, rows: list[int]):
        self.arrays, self.flat, self.rows = arrays, flat_labels, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, n: int) -> dict:
        i = self.rows[n]
        labels = self.flat[self.arrays.offsets[i] : self.arrays.offsets[i + 1]].astype(np.int64)
        return {"input_ids": self.arrays.get(i)["input_ids"], "labels": np.where(labels < 0, -100, labels), "idx": i}


class _TagCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for r, f in enumerate(features):
            ids[r, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"])
            labels[r, : len(f["labels"])] = torch.as_tensor(f["labels"])
        return {
            "input_ids": ids,
            "attention_mask": (
                torch.arange(width) < torch.tensor([len(f["input_ids"]) for f in features])[:, None]
            ).long(),
            "labels": labels,
            "idx": torch.tensor([f["idx"] for f in features]),
        }


def _save_npz(path: str, labels: dict[str, np.ndarray], summary: dict) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".labels-", suffix=".npz", dir=directory)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **labels)
    os.replace(tmp, path)
    with open(path[: -len(".npz")] + ".json", "w") as f:
        json.dump(summary, f, indent=1)
