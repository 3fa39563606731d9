"""``datamodules.corpus_plan``: the rules of the plan (repeats, held-out texts, the validation cut, the
``max_documents`` sample), the same answers as the in-memory algorithm it replaced, and memory that grows by about
one byte a document."""

import tracemalloc

import numpy as np
import pytest

from datamodules.corpus import doc_hash
from datamodules.corpus_plan import DROP, TRAIN, VAL, Cut, mix, plan, plan_stream


def in_memory_plan(doc_hashes: list[np.ndarray], held_out: np.ndarray, cut: Cut) -> np.ndarray:
    """The plan as it was computed before (every hash in memory, ~40 bytes a document): the reference."""
    hashes = np.concatenate(doc_hashes) if doc_hashes else np.zeros(0, np.uint64)
    keep = np.zeros(len(hashes), dtype=bool)
    keep[np.unique(hashes, return_index=True)[1]] = True
    keep &= ~np.isin(hashes, held_out)
    kept = np.flatnonzero(keep)
    if cut.max_documents and len(kept) > cut.max_documents:
        kept = np.sort(kept[np.argpartition(mix(hashes[kept]), cut.max_documents)[: cut.max_documents]])
    assign = np.zeros(len(hashes), dtype=np.int8)
    if not len(kept):
        return assign
    n_val = int(round(len(kept) * cut.val_fraction)) if cut.val_fraction > 0 else 0
    assign[kept] = TRAIN
    if n_val and n_val < len(kept):
        assign[kept[np.argpartition(hashes[kept], n_val)[:n_val]]] = VAL
    elif n_val:
        assign[kept] = VAL
    return assign


def test_plan_dedups_removes_held_out_and_cuts_val_by_hash():
    docs = [f"doc {i}" for i in range(200)]
    stream = docs + docs[:50] + ["held out"]
    hashes = np.array([doc_hash(d, 7) for d in stream], dtype=np.uint64)
    held = np.array([doc_hash("held out", 7), doc_hash("doc 3", 7)], dtype=np.uint64)
    assign = plan([hashes[:120], hashes[120:]], np.sort(held), Cut(7, 0.1, None))
    assert (assign[200:] == DROP).all() and assign[3] == DROP  # repeats and held-out texts
    assert (assign == VAL).sum() == round(0.1 * 199) and (assign == TRAIN).sum() == 199 - round(0.1 * 199)
    # the cut depends on the content only: the same documents in another order get the same split
    order = np.random.default_rng(0).permutation(200)
    again = plan([hashes[:200][order]], np.sort(held), Cut(7, 0.1, None))
    assert np.array_equal(again, assign[:200][order])
    sample = plan([hashes], np.sort(held), Cut(7, 0.1, 50))
    assert (sample != DROP).sum() == 50 and (sample == VAL).sum() == 5


@pytest.mark.parametrize("n", [0, 1, 2, 3_000, 40_000])
@pytest.mark.parametrize("cut", [Cut(0, 0.05, None), Cut(0, 0.5, None), Cut(0, 0.0, None), Cut(0, 0.1, 37)])
def test_the_same_answer_as_the_in_memory_plan(n, cut):
    rng = np.random.default_rng(n)
    unique = rng.integers(0, 2**64, size=max(n // 2, 1), dtype=np.uint64)
    hashes = rng.choice(unique, size=n)  # about half of them repeats, anywhere in the stream
    hashes[: n // 10] >>= np.uint64(rng.integers(0, 64))  # many in the first bucket, a skewed one
    held = np.sort(rng.choice(hashes, size=min(n, 25), replace=False)) if n else np.zeros(0, np.uint64)
    chunks = np.array_split(hashes, [n // 3, n // 3 + 1, n - 5]) if n > 5 else [hashes]
    expected = in_memory_plan(chunks, held, cut)
    assert np.array_equal(plan(chunks, held, cut), expected)
    if n > 100:  # a case with repeats, held-out texts and a validation cut to get right
        assert (expected == DROP).any() and ((expected == VAL).any() or not cut.val_fraction)


def test_memory_grows_by_about_a_byte_a_document(tmp_path):
    n, size = 1_000_000, 10_000
    chunks = (np.random.default_rng(i).integers(0, 2**64, size=size, dtype=np.uint64) for i in range(n // size))
    tracemalloc.start()
    try:
        assign, counts = plan_stream(chunks, np.zeros(0, np.uint64), Cut(0, 0.05, None), str(tmp_path / "b"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts == [size] * (n // size) and (assign == VAL).sum() == round(0.05 * n)
    # the answer (1 byte a document), one chunk's records and one bucket's; the in-memory plan peaks at ~40 n
    assert peak < 1.5 * n + 2_000_000, peak
    assert not (tmp_path / "b").exists()
