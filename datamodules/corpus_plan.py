"""The plan of an MLM corpus build: which documents train, which validate and which are dropped, decided from
their 64-bit content hashes in stream order, in memory that grows by one byte a document.

The rules (``Cut``): a document is kept at its first occurrence unless its hash is among the task's held-out
texts; with ``max_documents``, only the kept ones with the smallest ``mix(hash)`` (splitmix64's finaliser, a
second order independent of the first) stay; the validation documents are the ``round(n · val_fraction)`` kept
ones with the smallest hashes. So the cut depends on the seed and the content, not on any order.

Out of core: the hashes stream in a shard at a time, and each (hash, position) pair is appended to one of 256
bucket files by the top 8 bits of its order key (the hash, or its mix under ``max_documents``); the buckets in turn
are then the corpus in key order. Each bucket is sorted alone in memory: its first occurrences, less the held-out
texts, are the kept documents in key order, so the validation cut (or the ``max_documents`` sample) takes them
bucket by bucket from the first until it has its count. The plan holds its answer (``int8``, one byte a document),
one shard's hashes and one bucket (16 bytes for each of its documents, about 1/256 of the corpus).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DROP, TRAIN, VAL = 0, 1, 2
BUCKET_BITS = 8
RECORD = np.dtype([("hash", "<u8"), ("pos", "<i8")])


@dataclass(frozen=True)
class Cut:
    """Which documents train, which validate: chosen by content hash."""

    seed: int
    val_fraction: float
    max_documents: int | None


def mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, a bijection of uint64: a second, independent ordering of the hashes."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def plan_stream(chunks: Iterable[np.ndarray], held_out: np.ndarray, cut: Cut, scratch: str) -> tuple:
    """(DROP / TRAIN / VAL per document as ``int8``, the number of documents per chunk) from the documents'
    hashes in stream order, one ``uint64`` array per chunk; the buckets go in ``scratch``, made afresh and
    removed."""
    by_mix = bool(cut.max_documents)
    shutil.rmtree(scratch, ignore_errors=True)  # a killed plan's buckets
    os.makedirs(scratch)
    try:
        paths = [os.path.join(scratch, f"{i:03d}") for i in range(1 << BUCKET_BITS)]
        counts = _spread(chunks, paths, by_mix)
        assign = np.zeros(int(sum(counts)), dtype=np.int8)
        kept = (_kept(p, held_out, by_mix) for p in paths)  # one bucket at a time
        if by_mix:
            _sample_and_cut(assign, kept, cut)
        else:
            n_kept = 0
            for records in kept:
                assign[records["pos"]] = TRAIN
                n_kept += len(records)
            n_val = int(round(n_kept * cut.val_fraction)) if cut.val_fraction > 0 else 0
            for p in paths:  # the smallest hashes first: the buckets from the first, sorted again
                if n_val <= 0:
                    break
                records = _kept(p, held_out, by_mix)[:n_val]
                assign[records["pos"]] = VAL
                n_val -= len(records)
        return assign, counts
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def plan(doc_hashes: list[np.ndarray], held_out: np.ndarray, cut: Cut) -> np.ndarray:
    """``plan_stream``'s DROP / TRAIN / VAL of hashes already in memory (its buckets in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="bertlab-plan-") as tmp:
        return plan_stream(doc_hashes, held_out, cut, os.path.join(tmp, "buckets"))[0]


def _spread(chunks: Iterable[np.ndarray], paths: list[str], by_mix: bool) -> list[int]:
    """Append every chunk's (hash, position) records to the bucket of its key's top bits; the chunks' sizes."""
    counts, start, files = [], 0, [open(p, "wb") for p in paths]
    try:
        for hashes in chunks:
            hashes = np.asarray(hashes, dtype=np.uint64)
            key = mix(hashes) if by_mix else hashes
            bucket = (key >> np.uint64(64 - BUCKET_BITS)).astype(np.intp)
            order = np.argsort(bucket, kind="stable")
            records = np.empty(len(hashes), dtype=RECORD)
            records["hash"], records["pos"] = hashes[order], start + order
            sizes = np.bincount(bucket, minlength=len(paths))
            ends = np.cumsum(sizes)
            for i in np.flatnonzero(sizes):
                files[i].write(records[ends[i] - sizes[i] : ends[i]].tobytes())
            counts.append(len(hashes))
            start += len(hashes)
    finally:
        for f in files:
            f.close()
    return counts


def _kept(path: str, held_out: np.ndarray, by_mix: bool):
    """A bucket's kept documents in key order: the first occurrence of each hash, without the held-out ones."""
    records = np.fromfile(path, dtype=RECORD)
    key = mix(records["hash"]) if by_mix else records["hash"]
    records = records[np.lexsort((records["pos"], key))]  # by key, then stream position
    hashes = records["hash"]
    first = np.ones(len(records), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]  # equal keys are equal hashes: mix is a bijection
    records = records[first]
    return records[~np.isin(records["hash"], held_out)]


def _sample_and_cut(assign: np.ndarray, kept, cut: Cut) -> None:
    """``max_documents``: the first ones in mix order, then the validation cut among them by hash."""
    chosen, need = [], cut.max_documents
    for records in kept:
        chosen.append(records[:need])
        need -= len(chosen[-1])
        if need <= 0:
            break
    records = np.concatenate(chosen) if chosen else np.zeros(0, dtype=RECORD)
    if not len(records):
        return
    assign[records["pos"]] = TRAIN
    n_val = int(round(len(records) * cut.val_fraction)) if cut.val_fraction > 0 else 0
    if n_val and n_val < len(records):
        assign[records["pos"][np.argpartition(records["hash"], n_val)[:n_val]]] = VAL
    elif n_val:
        assign[records["pos"]] = VAL
