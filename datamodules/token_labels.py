"""``TokenLabelDataModule``: Gu et al.'s important-token labels as Model_b's training data.

Gu et al. 2020 ("Train No Evil", §3.1) label the tokens of the task's labelled sentences with
Model_0 (a classifier fine-tuned on the task) by the buffer rule (``datamodules.buffer_rule``), and
train a token classifier, Model_b, on those labels. As the authors' code does
(thunlp/SelectiveMasking ``data/sc_mask_gen.py``, ``create_data.py``):

* each document is split into sentences (``datamodules.sentences``), and each sentence gets the
  document's label;
* a sentence gets buffer-rule labels only when Model_0 classifies it correctly on its own;
* Model_b trains on *every* sentence: a misclassified one goes in all-zero (``misclassified: zeros``;
  ``drop`` leaves it out);
* stopwords are never important (``drop_stopwords``; ``datamodules.stopwords``).

The last two make Model_b's targets from the raw labels (``datamodules.tag_targets``).

This module runs the rule once and caches the raw labels on disk (misclassified sentences unlabelled;
the two options above are applied when the datasets are built, so they reuse the file), keyed by the
task's texts, the splitter, the tokenizer, ``max_length``/truncation, the *content* of Model_0 (a
retrained Model_0 at the same path is a new key), δ, the rule, the unit and the sentence cap; a second
run with the same inputs reads the file back (``labels_built_now`` says which happened).

Splits: the train documents' sentences, minus the sentences of ``val_fraction`` of the documents held
out for checkpoint selection, train Model_b; the task's *val* sentences, labelled the same way and never
trained on, are the test split on which ``bertlab test`` reports Model_b's token-level precision,
recall and F1.
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bertlab.core.errors import BertlabError
from bertlab.core.hardware import INFERENCE_PRECISIONS, inference_dtype
from bertlab.core.models import load_tokenizer
from datamodules import sentence_labels, sources
from datamodules.buffer_rule import buffer_rule_labels, continuation_table, continuation_word_ids
from datamodules.scoring_run import remove_parts, run_in_chunks
from datamodules.sentence_labels import UNLABELLED, SentenceLabels, TagCollator, TaggedSentences
from datamodules.sentences import check_splitter, split_documents
from datamodules.splits import Splits
from datamodules.tag_targets import MISCLASSIFIED, TagTargets
from datamodules.task_scorer import (
    check_same_tokenizer,
    classifier_probs,
    load_sequence_classifier,
    model_fingerprint,
    scoring_device,
)
from datamodules.token_cache import SpecialTemplate, cache_key, default_cache_dir, tokenize, tokenizer_fingerprint

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
        splitter: str = "auto",
        misclassified: str = "zeros",
        drop_stopwords: bool = True,
        max_sentences: int | None = None,
        precision: str = "auto",
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
            max_length, truncation: as in Model_0's classifier config; they apply to each sentence.
            model0: Model_0, a fine-tuned sequence classifier directory whose labels are the task's.
            delta: δ of the buffer rule, in (0, 1): a word is important when P(y | s) − P(y | s′ w) < δ (signed).
            whole_word: words (WordPiece ``##`` pieces joined) are the buffer's units; else single tokens.
            splitter: how documents become sentences: ``auto`` (by script), ``english`` (pysbd), ``chinese``
                (。！？ and line breaks) or ``none`` (a document is one sentence).
            misclassified: ``zeros`` (Gu et al.): sentences Model_0 gets wrong train Model_b as all-zero;
                ``drop``: they are left out.
            drop_stopwords: stopwords are never important (Gu et al.), on every split.
            max_sentences: label at most this many train sentences (a deterministic sample), for cheaper runs.
            precision: Model_0's dtype for the rule: ``auto`` (bf16 where the hardware has it), ``bf16`` or ``fp32``
                (the authors'); labels are keyed by it.
            label_batch_size: sentences whose candidates share one forward pass of Model_0.
            val_fraction: share of the train *documents* whose sentences are held out to select Model_b's checkpoint.
        """
        super().__init__()
        self.save_hyperparameters()
        if not task or not model0:
            raise BertlabError("TokenLabelDataModule needs the labelled `task` and `model0`, the task's classifier")
        if not 0.0 < float(delta) < 1.0:
            raise BertlabError(f"delta (δ of the buffer rule) must be in (0, 1), got {delta}; Gu et al. use 0.01")
        if not 0.0 < float(val_fraction) < 1.0:
            raise BertlabError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if misclassified not in MISCLASSIFIED:
            raise BertlabError(f"misclassified must be one of {', '.join(MISCLASSIFIED)}, got {misclassified!r}")
        check_splitter(splitter)
        if precision not in INFERENCE_PRECISIONS:
            raise BertlabError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
        # typed arguments are kept as given: under LightningCLI, ``hparams`` holds their config (plain dicts)
        self.task = task if isinstance(task, Splits) else Splits(**task)
        self.cache_dir = cache_dir or default_cache_dir()
        self.datasets: dict[str, Dataset] = {}
        self.labels_built_now: bool | None = None

    @property
    def dtype(self) -> torch.dtype:
        return inference_dtype(self.hparams.precision, scoring_device().type)

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

    def _label_split(self, split: str, model, template: SpecialTemplate, parts_dir: str | None) -> SentenceLabels:
        h, task = self.hparams, self.task_data
        frame = task.frames[split]
        sentences, doc = split_documents(frame["text"].tolist(), h.splitter)
        if split == "train" and h.max_sentences and h.max_sentences < len(sentences):
            keep = np.sort(np.random.default_rng(h.seed).permutation(len(sentences))[: h.max_sentences])
            sentences, doc = [sentences[i] for i in keep], [doc[i] for i in keep]
        gold = frame["label"].map(task.label2id).to_numpy(np.int64)[np.asarray(doc, dtype=np.int64)]
        full, _ = tokenize(self.tokenizer, sentences, None, h.max_length, h.truncation, task.hparams.head_tokens)
        k, m = len(template.prefix), len(template.suffix)
        content = [ids[k : len(ids) - m] for ids in full]
        cont = continuation_table(self.tokenizer)
        words = [continuation_word_ids(c, cont) if h.whole_word else list(range(len(c))) for c in content]
        prob_fn, gold = classifier_probs(model, self.dtype), gold.tolist()

        def label_rows(lo: int, hi: int) -> np.ndarray:
            labels = buffer_rule_labels(
                prob_fn,
                content[lo:hi],
                words[lo:hi],
                gold[lo:hi],
                template.prefix,
                template.suffix,
                self.tokenizer.pad_token_id,
                delta=h.delta,
                batch_size=h.label_batch_size,
            )
            flat = [np.full(len(c), UNLABELLED, np.int8) if x is None else x for x, c in zip(labels, content[lo:hi])]
            return np.concatenate(flat).astype(np.int8) if flat else np.zeros(0, np.int8)

        lengths = np.array([len(c) for c in content], dtype=np.int64)
        flat = run_in_chunks(lengths, label_rows, parts_dir and os.path.join(parts_dir, split), f"{split} labels")
        starts = np.concatenate([[0], np.cumsum(lengths)])
        rows = []
        for i, ids in enumerate(full):
            row = np.full(len(ids), UNLABELLED, dtype=np.int8)
            row[k : k + int(lengths[i])] = flat[starts[i] : starts[i + 1]]
            rows.append(row)
        lengths = np.array([len(ids) for ids in full], dtype=np.int64)
        return SentenceLabels(
            ids=np.concatenate([np.asarray(ids, np.int32) for ids in full]) if full else np.zeros(0, np.int32),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            labels=np.concatenate(rows) if rows else np.zeros(0, np.int8),
            doc=np.asarray(doc, dtype=np.int64),
        )

    @cached_property
    def labels(self) -> dict[str, SentenceLabels]:
        """``{"train": ..., "val": ...}``, read from the cache or computed by the buffer rule."""
        h, task = self.hparams, self.task_data
        frames = task.frames
        if "text_pair" in frames["train"]:
            raise BertlabError("selective masking labels single sentences; the task has a `text_pair_column`")
        check_same_tokenizer(self.tokenizer, h.model0, "Model_0")
        key = cache_key(
            kind="sentence_token_labels",
            data={s: sources.text_fingerprint(frames[s]) for s in ("train", "val")},
            splitter=h.splitter,
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_length=task.hparams.max_length,
            truncation=task.hparams.truncation,
            head_tokens=task.hparams.head_tokens,
            model0=model_fingerprint(h.model0),
            delta=float(h.delta),
            dtype=str(self.dtype).removeprefix("torch."),
            rule="gu_signed",  # labels made by the old |·| < δ rule are not reused
            whole_word=h.whole_word,
            max_sentences=h.max_sentences,
            seed=h.seed,
        )
        path = os.path.join(self.cache_dir, "token_labels", f"{key}.npz")
        self.labels_path = path
        if os.path.isfile(path):
            self.labels_built_now = False
            out = sentence_labels.load(path)
        else:
            model = load_sequence_classifier(h.model0, task.label_names, role="Model_0")
            template = SpecialTemplate.from_tokenizer(self.tokenizer)
            parts = path[: -len(".npz")] + ".parts"  # finished chunks, for a resume after a kill
            out = {s: self._label_split(s, model, template, parts) for s in ("train", "val")}
            sentence_labels.save(path, out, self.summary(out))
            remove_parts(parts)
            self.labels_built_now = True
        self._check(out["train"])
        return out

    def _check(self, train: SentenceLabels) -> None:
        if not train.correct.any():
            raise BertlabError(
                f"Model_0 {self.hparams.model0!r} classifies none of the labelled train sentences correctly; "
                "nothing to learn important tokens from (is it fine-tuned on this task?)"
            )
        if not (self.targets(train)[1] == 1).any():
            raise BertlabError(
                f"no token scores as important at δ = {self.hparams.delta} on the task's train sentences; "
                "raise `delta` (a word is important when P(y | s) − P(y | s′ w) < δ)"
            )

    @cached_property
    def tag_targets(self) -> TagTargets:
        h = self.hparams
        return TagTargets(self.tokenizer, h.misclassified, h.drop_stopwords)

    def targets(self, split: SentenceLabels) -> tuple[list[int], np.ndarray]:
        """Model_b's rows and flat targets, both options applied (``datamodules.tag_targets``)."""
        return self.tag_targets(split)

    def summary(self, labels: dict[str, SentenceLabels] | None = None) -> dict:
        return self.tag_targets.summary(labels or self.labels)

    # ------------------------------------------------------------ datasets

    def prepare_data(self) -> None:
        self.labels  # noqa: B018 - label (or read) once, and fail on bad input before any training

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train = self.labels["train"]
        rows, flat = self.targets(train)
        docs = np.unique(train.doc[rows])
        n_val = max(1, int(round(len(docs) * self.hparams.val_fraction)))
        if len(docs) - n_val < 1:
            raise BertlabError(f"only {len(docs)} document(s) with labelled sentences: too few to hold one out")
        held = set(docs[np.random.default_rng(self.hparams.seed).permutation(len(docs))[:n_val]].tolist())
        self.datasets["train"] = TaggedSentences(train, flat, [i for i in rows if int(train.doc[i]) not in held])
        self.datasets["val"] = TaggedSentences(train, flat, [i for i in rows if int(train.doc[i]) in held])
        val_rows, val_flat = self.targets(self.labels["val"])
        self.datasets["test"] = TaggedSentences(self.labels["val"], val_flat, val_rows)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self.hparams
        return DataLoader(
            self.datasets[split],
            batch_size=h.batch_size if shuffle else (h.eval_batch_size or h.batch_size),
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(h.seed) if shuffle else None,
            collate_fn=TagCollator(self.tokenizer.pad_token_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
