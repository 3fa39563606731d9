"""Assembling a corpus build's shards into the cache entry: one flat token stream per split, written a shard at a
time (only one shard's arrays are in memory at once) and renamed into place at once.

Each shard (``corpus_build.tokenize_shard``) is an ``.npz`` holding, per split, the sequences' lengths
(``SPLIT_lengths``), their token ids and word ids back to back (``SPLIT_ids``, ``SPLIT_types``) and its counts
of text tokens and unknown tokens. The entry holds per split ``offsets.npy`` (int64, one more than the
sequences), ``input_ids.npy`` and, for word-aware layouts, ``token_type_ids.npy``: ``TokenArrays``
(``datamodules.token_cache``) opens them memory-mapped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

import numpy as np

from bertlab.core.faults import fault_point
from bertlab.core.files import atomic_path


def assemble(final: str, paths: list[str], splits: tuple[str, ...], words: bool, meta: dict, started: float) -> dict:
    """Append the shards at ``paths`` into one flat token stream per split, with ``meta.json`` (``meta`` and the
    counts; the build's seconds since ``started``), renamed into ``final`` at once; returns what ``meta.json``
    holds."""
    stats = dict(meta)
    with atomic_path(final, directory=True, replace=False) as tmp:
        for split in splits:
            directory = os.path.join(tmp, split)
            os.makedirs(directory)
            unk, tokens = 0, 0
            for p in paths:
                with np.load(p) as z:
                    unk, tokens = unk + int(z[f"{split}_unk"]), tokens + int(z[f"{split}_tokens"])
            n, total, longest = write_offsets(paths, f"{split}_lengths", os.path.join(directory, "offsets.npy"))
            _concat(paths, f"{split}_ids", os.path.join(directory, "input_ids.npy"), np.int32, total)
            if words:  # word ids index a sequence's words: they fit int8 at max_length <= 128
                dtype = np.int8 if longest <= 128 else np.int32
                _concat(paths, f"{split}_types", os.path.join(directory, "token_type_ids.npy"), dtype, total)
            stats[split] = {"sequences": n, "tokens": total, "text_tokens": tokens, "unk": unk}
        stats["build"]["seconds"] = time.perf_counter() - started  # the plan, the tokenizing and the assembly
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=1, default=str)
        fault_point("cache_write")
    return stats


@contextlib.contextmanager
def _npy(out: str, dtype, n: int) -> Iterator:
    """``out`` open for writing a 1-D ``.npy`` of ``n`` items of ``dtype``, its header written: the caller writes
    the items' bytes in order, a shard at a time."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    with open(out, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        yield f


def write_offsets(paths: list[str], name: str, out: str) -> tuple[int, int, int]:
    """``offsets.npy`` (int64, one more than the sequences) from the shards' ``name`` lengths, one shard in memory
    at a time (the whole corpus's lengths were ~40 bytes a document at the peak); returns (sequences, tokens,
    longest)."""
    n = longest = 0
    for p in paths:
        with np.load(p) as z:
            lengths = z[name]
        n, longest = n + len(lengths), max(longest, int(lengths.max(initial=0)))
    total = 0
    with _npy(out, np.int64, n + 1) as f:
        f.write(np.zeros(1, np.int64).tobytes())
        for p in paths:
            with np.load(p) as z:
                ends = total + np.cumsum(z[name], dtype=np.int64)
            f.write(ends.tobytes())
            total = int(ends[-1]) if len(ends) else total
    return n, total, longest


def _concat(paths: list[str], name: str, out: str, dtype, n: int) -> None:
    with _npy(out, dtype, n) as f:
        for p in paths:
            with np.load(p) as z:
                f.write(z[name].astype(dtype, copy=False).tobytes())
