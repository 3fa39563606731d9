"""Running a token scorer over a whole corpus: in chunks that survive a kill, on all cores, with progress.

Selective masking's scorers (the buffer rule in ``token_labels``; Model_b and entropy in
``corpus_scoring``) make one float or label per token of a corpus that may hold millions of sentences.
``run_in_chunks`` cuts the rows into chunks of about ``chunk_tokens`` tokens (the cut depends only on
the row lengths, so it is the same after a restart), scores each with ``score_rows(lo, hi)`` and, when
given a ``parts_dir``, writes each chunk's flat result there as soon as it is done (atomically). A run
killed part-way resumes at the first missing chunk; the caller removes the parts once it has stored the
whole. A tqdm bar on stderr shows tokens/s as it goes, and one log line gives the total rate.

``scoring_threads`` uses every core this process may run on, unless ``OMP_NUM_THREADS`` is set, which
then wins (a machine shared with other jobs, where extra threads only wait for each other).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info

from bertlab.core.files import atomic_path

CHUNK_TOKENS = 1 << 16


def chunk_bounds(lengths: np.ndarray, chunk_tokens: int = CHUNK_TOKENS) -> list[tuple[int, int]]:
    """Consecutive row ranges of about ``chunk_tokens`` tokens each (at least one row)."""
    bounds, lo, total = [], 0, 0
    for i, n in enumerate(np.asarray(lengths, dtype=np.int64).tolist()):
        total += n
        if total >= chunk_tokens:
            bounds.append((lo, i + 1))
            lo, total = i + 1, 0
    if lo < len(lengths):
        bounds.append((lo, len(lengths)))
    return bounds


@contextlib.contextmanager
def scoring_threads() -> Iterator[int]:
    """All cores for the duration (``OMP_NUM_THREADS`` overrides), the caller's thread count restored after."""
    before = torch.get_num_threads()
    wanted = before if os.environ.get("OMP_NUM_THREADS") else len(os.sched_getaffinity(0))
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


def run_in_chunks(
    lengths: np.ndarray,
    score_rows: Callable[[int, int], np.ndarray],
    parts_dir: str | None = None,
    desc: str = "scoring",
    chunk_tokens: int = CHUNK_TOKENS,
) -> np.ndarray:
    """The concatenated flat results of ``score_rows`` over every chunk of rows (``lengths`` tokens each)."""
    from tqdm import tqdm

    bounds = chunk_bounds(lengths, chunk_tokens)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
    parts, resumed, scored, start = [], 0, 0, time.perf_counter()
    with (
        scoring_threads() as threads,
        tqdm(total=int(offsets[-1]), unit="tok", unit_scale=True, desc=desc, file=sys.stderr, mininterval=2.0) as bar,
    ):
        for lo, hi in bounds:
            path = os.path.join(parts_dir, f"rows-{lo:010d}-{hi:010d}.npy") if parts_dir else None
            if path and os.path.isfile(path):
                part, resumed = np.load(path), resumed + 1
            else:
                part = score_rows(lo, hi)
                scored += int(offsets[hi] - offsets[lo])
                if path:
                    with atomic_path(path) as tmp:
                        np.save(tmp, part)
            parts.append(part)
            bar.update(int(offsets[hi] - offsets[lo]))
            bar.set_postfix(new_tok_per_s=f"{scored / max(time.perf_counter() - start, 1e-9):.0f}", refresh=False)
    seconds = time.perf_counter() - start
    rank_zero_info(
        f"bertlab: {desc}: {int(offsets[-1])} tokens in {len(bounds)} chunk(s), {resumed} resumed from {parts_dir}; "
        f"{scored} scored in {seconds:.1f} s ({scored / max(seconds, 1e-9):.0f} tokens/s, {threads} thread(s))"
    )
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def remove_parts(parts_dir: str | None) -> None:
    """Drop the chunk files once the whole result is stored."""
    if parts_dir:
        shutil.rmtree(parts_dir, ignore_errors=True)
