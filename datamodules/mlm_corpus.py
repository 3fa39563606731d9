"""``MLMCorpus``: an MLM data module's corpus as streamed sources, named by content, and its token cache.

The sources are the labelled task's train texts (first, so a duplicate keeps its first place) and the corpus
entries (``datamodules.corpus``), streamed and never held. The task's val and test texts are removed from all of
them by their content hashes. The cache key names the corpus by content (files by their streamed hash, remembered
by size and mtime; the held-out texts as a hash of the set) with everything that shapes the sequences and the cut,
so a warm cache is found without reading the text. ``build`` tokenizes the corpus into that entry once, on every
core (``datamodules.corpus_build``); ``meta`` reads what the build recorded; ``documents`` reads the corpus again,
for inspection and tests (training reads the cached tokens).
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cached_property
from typing import Any

import numpy as np

from bertlab.core.files import file_lock
from bertlab.core.fingerprint import fingerprint
from datamodules import corpus_build
from datamodules.corpus import Source, doc_hash, identify, open_entry, texts_source
from datamodules.corpus_plan import Cut
from datamodules.coverage import SAMPLE, refuse_uncovered
from datamodules.mlm_sequences import Layout
from datamodules.splits import Splits
from datamodules.token_cache import cache_key, tokenizer_fingerprint


def layout(tokenizer, mode: str, max_length: int, chinese_whole_word: bool) -> Layout:
    """How documents become sequences with ``tokenizer``'s special tokens ([CLS]/[SEP], else BOS/EOS)."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        cls_id, sep_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    return Layout(mode, max_length, chinese_whole_word, cls_id, sep_id, tokenizer.unk_token_id)


@dataclasses.dataclass
class MLMCorpus:
    """The corpus of one MLM data module: ``entries``, and ``task``'s train texts unless ``task_train_texts`` is
    False; tokenized by ``tokenizer`` as ``layout`` says, cut as ``cut`` says, cached under ``cache_dir``."""

    entries: list[str]
    task: Splits | None
    task_train_texts: bool
    tokenizer: Any
    layout: Layout
    cut: Cut
    cache_dir: str
    workers: int | None = None

    @cached_property
    def task_texts(self) -> tuple[list[str], np.ndarray]:
        """(the task's train texts, or none; the sorted hashes of its val and test texts)."""
        if self.task is None:
            return [], np.zeros(0, np.uint64)
        frames = self.task.read()
        held = {t.strip() for split in ("val", "test") if split in frames for t in frames[split]["text"]}
        hashes = np.unique(np.fromiter((doc_hash(t, self.cut.seed) for t in held), np.uint64, len(held)))
        train = frames["train"]["text"].astype(str).tolist() if self.task_train_texts else []
        return train, hashes

    @cached_property
    def sources(self) -> list[Source]:
        train, _ = self.task_texts
        task = [texts_source("the task's train texts", train)] if train else []
        return task + [open_entry(e) for e in self.entries]

    @cached_property
    def key(self) -> str:
        lay = self.layout
        return cache_key(
            kind="mlm-corpus",
            sources=[identify(s, self.cache_dir) for s in self.sources],
            held_out=fingerprint(self.task_texts[1].tobytes()),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_length=lay.max_length,
            mode=lay.mode,
            words=lay.words,
            cut=dataclasses.astuple(self.cut),
        )

    @property
    def path(self) -> str:
        return os.path.join(self.cache_dir, "tokens", self.key)

    def build(self) -> bool:
        """Tokenize the corpus into the cache unless it is there; True when this call built it. Concurrent
        builders take turns on the entry's lock: the first builds, the others then find it."""
        if os.path.isfile(os.path.join(self.path, "meta.json")):
            return False
        with file_lock(os.path.join(self.cache_dir, "locks", f"tokens-{self.key}")):
            if os.path.isfile(os.path.join(self.path, "meta.json")):
                return False
            corpus_build.build(
                self.path,
                self.sources,
                self.task_texts[1],
                self.tokenizer.backend_tokenizer.to_str(),
                self.layout,
                self.cut,
                self.workers or corpus_build.default_workers(),
                meta={"key": self.key, "mode": self.layout.mode},
            )
        return True

    def meta(self) -> dict:
        with open(os.path.join(self.path, "meta.json"), encoding="utf-8") as f:
            return json.load(f)

    def documents(self) -> dict[str, list[str]]:
        """train/val documents, deduplicated, without the task's val/test texts (the corpus read again)."""
        return corpus_build.documents(self.sources, self.task_texts[1], self.cut)

    def check_coverage(self, meta: dict, max_unk_fraction: float) -> None:
        """Refuse a corpus whose share of ``[UNK]`` among its train tokens is above ``max_unk_fraction``."""
        train = meta["train"]
        where = f"the MLM corpus ({', '.join(self.entries) or 'the task train texts'})"
        share = train["unk"] / train["text_tokens"] if train["text_tokens"] else 0.0
        sample = lambda: corpus_build.first_documents(self.sources, SAMPLE)  # noqa: E731
        refuse_uncovered(self.tokenizer, share, train["text_tokens"], sample, where, max_unk_fraction)
