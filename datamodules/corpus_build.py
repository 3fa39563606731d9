"""The MLM token cache built from a streamed corpus: once, with every core, resumably.

1. **Shards.** Each text file is cut into byte ranges of ``SHARD_BYTES`` at line starts; texts held in memory
   (tables, built-ins, the task's train texts) into runs of ``TEXTS_PER_SHARD``.
2. **Plan** (one worker, one pass over the text): a 64-bit content hash per document (``corpus.doc_hash``)
   decides which documents are dropped (repeats, the task's held-out texts), which train and which validate
   (``datamodules.corpus_plan``: out of core, one byte a document in memory). No text is held; no global
   permutation.
3. **Tokenize**: a pool of ``workers`` processes, one shard per task, each writes ``shard-NNNNN.npz`` (its
   train and val sequences) atomically as it finishes. A build killed mid-way keeps its plan and finished
   shards in ``tokens/KEY.build``; the next build tokenizes only the missing shards.
4. **Assemble** (``corpus_assembly``): shards are appended into one flat ``TokenArrays`` per split
   (``tokens/KEY/train``, ``tokens/KEY/val``), renamed into place at once, and the build directory is removed.

The plan and the tokenizing run in child processes, so the training process never holds the hashes or the
tokenizer's buffers. A progress bar reports tokens/s.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bertlab.core.errors import BertlabError
from bertlab.core.faults import fault_point
from bertlab.core.files import atomic_path
from bertlab.core.lifetime import tie_to
from datamodules.corpus import Source, byte_ranges, doc_hash, read_range
from datamodules.corpus_assembly import assemble
from datamodules.corpus_plan import DROP, TRAIN, VAL, Cut, plan, plan_stream
from datamodules.mlm_sequences import Layout, Sequencer

SHARD_BYTES = 8 << 20  # ~2M tokens of review text: a few seconds of one core, ~10 MB of tokens
TEXTS_PER_SHARD = 50_000
SPLITS = {"train": TRAIN, "val": VAL}


@dataclass(frozen=True)
class Shard:
    """A unit of work: bytes ``[lo, hi)`` of the text file ``path``, or in-memory texts ``[lo, hi)`` of
    source ``source`` (``path`` None)."""

    source: int
    path: str | None
    lo: int
    hi: int


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shards_of(sources: list[Source], texts: dict[int, list[str]]) -> list[Shard]:
    out = []
    for i, source in enumerate(sources):
        if source.path is not None:
            out += [Shard(i, source.path, lo, hi) for lo, hi in byte_ranges(source.path, SHARD_BYTES)]
        else:
            n = len(texts[i])
            out += [Shard(i, None, lo, min(lo + TEXTS_PER_SHARD, n)) for lo in range(0, n, TEXTS_PER_SHARD)]
    return out


def shard_docs(shard: Shard, texts: list[str] | None) -> Iterator[str]:
    """The shard's documents; ``texts``: an in-memory shard's own texts (None for a file shard)."""
    return read_range(shard.path, shard.lo, shard.hi) if texts is None else iter(texts)


# ------------------------------------------------------------ worker side

_sequencer: Sequencer | None = None


def _init_worker(tokenizer_json: str, layout: Layout, stage: int | None = None) -> None:
    """Set up a tokenizing worker; a forked one (``stage``: the pid that forked it) dies with its stage, which
    it would otherwise outlive, writing shards into a cache entry no one locks any more."""
    global _sequencer
    if stage is not None:
        tie_to(stage)
    _sequencer = Sequencer(tokenizer_json, layout)


def _plan_task(shards: list[Shard], texts: list[list[str] | None], held_out, cut, path) -> None:
    chunks = (np.fromiter((doc_hash(d, cut.seed) for d in shard_docs(s, t)), np.uint64) for s, t in zip(shards, texts))
    assign, counts = plan_stream(chunks, held_out, cut, os.path.join(os.path.dirname(path), "plan-buckets"))
    with atomic_path(path) as tmp:
        np.savez(tmp, assign=assign, counts=np.array(counts, dtype=np.int64))


def tokenize_shard(shard: Shard, texts: list[str] | None, assign: np.ndarray, path: str) -> int:
    """Tokenize one shard's kept documents into ``path`` (atomically); returns its number of tokens."""
    fault_point("tokenize")
    docs = list(shard_docs(shard, texts))
    out = {}
    for split, tag in SPLITS.items():
        seq = _sequencer(d for d, a in zip(docs, assign) if a == tag)
        out |= {f"{split}_ids": seq.ids, f"{split}_lengths": seq.lengths, f"{split}_unk": seq.unk}
        out[f"{split}_tokens"] = seq.tokens
        if seq.types is not None:
            out[f"{split}_types"] = seq.types
    with atomic_path(path) as tmp:
        np.savez(tmp, **out)
        fault_point("cache_write")
    return int(out["train_lengths"].sum() + out["val_lengths"].sum())


def _tokenize_task(args) -> int:
    return tokenize_shard(*args)


# ------------------------------------------------------------ orchestration


def build(
    final: str,
    sources: list[Source],
    held_out: np.ndarray,
    tokenizer_json: str,
    layout: Layout,
    cut: Cut,
    workers: int,
    meta: dict,
) -> dict:
    """Build ``final`` (``train/`` and ``val/`` ``TokenArrays`` and ``meta.json``), resuming ``final.build``.

    The caller holds the cache entry's lock."""
    started = time.perf_counter()
    work = final + ".build"
    os.makedirs(work, exist_ok=True)
    texts = {i: s.texts() for i, s in enumerate(sources) if s.path is None}
    shards = shards_of(sources, texts)
    shard_texts = [texts[s.source][s.lo : s.hi] if s.source in texts else None for s in shards]
    workers = max(1, min(workers, len(shards)))
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers, _init_worker, (tokenizer_json, layout, os.getpid())) if workers > 1 else None
    try:
        plan_path = os.path.join(work, "plan.npz")
        if not os.path.isfile(plan_path):
            args = (shards, shard_texts, held_out, cut, plan_path)
            pool.apply(_plan_task, args) if pool else _plan_task(*args)
        with np.load(plan_path) as z:
            assign, counts = z["assign"], z["counts"]
        _check_plan(assign, sources, cut)
        starts = np.concatenate([[0], np.cumsum(counts)])
        paths = [os.path.join(work, f"shard-{i:05d}.npz") for i in range(len(shards))]
        todo = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
        tasks = [(shards[i], shard_texts[i], assign[starts[i] : starts[i + 1]], paths[i]) for i in todo]
        if pool is None:
            _init_worker(tokenizer_json, layout)
        done = pool.imap_unordered(_tokenize_task, tasks) if pool else map(_tokenize_task, tasks)
        _progress(done, len(shards), len(shards) - len(todo), workers)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    documents = {k: int((assign == v).sum()) for k, v in SPLITS.items()}
    timing = {"workers": workers, "shards": len(shards), "resumed_shards": len(shards) - len(todo)}
    meta = {**meta, "documents": documents, "build": timing}
    stats = assemble(final, paths, tuple(SPLITS), layout.words, meta, started)
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _check_plan(assign: np.ndarray, sources: list[Source], cut: Cut) -> None:
    names = ", ".join(s.name for s in sources)
    kept = int((assign != DROP).sum())
    if not kept:
        raise BertlabError(f"the MLM corpus is empty after reading {names}")
    if not (assign == TRAIN).any():
        raise BertlabError(f"the MLM corpus has {kept} document(s): too few for val_fraction {cut.val_fraction}")


def _progress(done, n_shards: int, finished: int, workers: int) -> None:
    from tqdm import tqdm

    start, tokens = time.perf_counter(), 0
    with tqdm(total=n_shards, initial=finished, unit="shard", desc="tokenizing", file=sys.stderr, mininterval=1) as bar:
        for n in done:
            tokens += n
            bar.update(1)
            bar.set_postfix_str(f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f} tokens/s, {workers} workers")


# ------------------------------------------------------------ reading the documents back (inspection, messages)


def documents(sources: list[Source], held_out: np.ndarray, cut: Cut) -> dict[str, list[str]]:
    """The train and val documents in memory, in stream order (for inspection and tests, not for training)."""
    texts = {i: s.texts() for i, s in enumerate(sources) if s.path is None}
    shards = shards_of(sources, texts)
    docs = [d for s in shards for d in shard_docs(s, texts[s.source][s.lo : s.hi] if s.path is None else None)]
    assign = plan([np.fromiter((doc_hash(d, cut.seed) for d in docs), dtype=np.uint64)], held_out, cut)
    _check_plan(assign, sources, cut)
    return {split: [d for d, a in zip(docs, assign) if a == tag] for split, tag in SPLITS.items()}


def first_documents(sources: list[Source], n: int) -> list[str]:
    """The first ``n`` documents of the stream (a sample for an error message)."""
    out: list[str] = []
    for source in sources:
        docs = read_range(source.path, 0, os.path.getsize(source.path)) if source.path else iter(source.texts())
        out += itertools.islice(docs, n - len(out))
        if len(out) >= n:
            break
    return out
