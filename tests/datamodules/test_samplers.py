"""``datamodules.samplers``: every order is bit-identical to the one the samplers drew before they were made
compact (``int32`` orders, lengths in the smallest unsigned dtype, the grouped order gathered in place), which the
reference copies below keep, for several (seed, epoch, n, batch_size), resumed mid-pass, and split by
``RankSampler``; and building a sampler and its first pass over a 1M-example cache takes a bounded number of
bytes per example (the old code peaked at ~45)."""

import itertools
import os
import tracemalloc

import numpy as np
import pytest

from datamodules.mlm_dataset import MLMDataset
from datamodules.samplers import LengthGroupedSampler, RankSampler, ShuffleSampler, permutation
from datamodules.token_cache import TokenArrays


def old_shuffle(n, seed, epoch):
    return np.random.default_rng([seed, epoch]).permutation(n)


def old_grouped(lengths, batch_size, seed, epoch, mega_batch_mult=50):
    """``LengthGroupedSampler.order`` as it was (main at 15ad657), with ``int64`` lengths."""
    rng, lengths = np.random.default_rng([seed, epoch]), np.asarray(lengths, dtype=np.int64)
    mega = max(batch_size * mega_batch_mult, batch_size)
    perm = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(perm), mega):
        chunk = perm[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return np.concatenate([batches[b] for b in order]) if batches else perm


def _lengths(n, seed, longest=128):
    return np.random.default_rng(seed).integers(0, longest + 1, n)  # zeros and many ties included


CASES = [  # n, batch_size, mega_batch_mult, longest
    (0, 4, 50, 10),
    (1, 4, 50, 10),
    (3, 8, 50, 10),  # one short batch
    (103, 4, 50, 17),
    (1000, 7, 3, 128),  # several mega-batches, the last one short
    (1024, 8, 4, 128),  # whole batches only
    (5000, 32, 50, 60_000),  # uint16 lengths
    (4099, 5, 0, 70_000),  # mega-batch = batch (uint32 lengths)
]


@pytest.mark.parametrize("n,batch_size,mult,longest", CASES)
def test_orders_are_those_of_the_old_samplers_every_epoch(n, batch_size, mult, longest):
    lengths = _lengths(n, n, longest)
    for seed in (0, 7):
        grouped = LengthGroupedSampler(lengths, batch_size, seed=seed, mega_batch_mult=mult)
        shuffle = ShuffleSampler(n, seed=seed)
        for epoch in range(3):
            assert list(grouped) == old_grouped(lengths, batch_size, seed, epoch, mult).tolist()
            assert list(shuffle) == old_shuffle(n, seed, epoch).tolist()


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 65_537])
def test_the_int32_permutation_is_the_generators_and_leaves_it_where_it_would(n):
    a, b = np.random.default_rng([3, 1]), np.random.default_rng([3, 1])
    mine = permutation(a, n)
    assert mine.dtype == np.int32 and np.array_equal(mine, b.permutation(n))
    assert a.integers(2**62) == b.integers(2**62)  # the next draw (the batches' shuffle) is the same too


@pytest.mark.parametrize("resume_at", [0, 1, 12, 101])
def test_a_resumed_pass_and_each_ranks_part_are_the_old_ones(resume_at):
    n, lengths = 103, _lengths(103, 1, 17)
    for make, old in [
        (lambda: LengthGroupedSampler(lengths, 4, seed=2), lambda e: old_grouped(lengths, 4, 2, e)),
        (lambda: ShuffleSampler(n, seed=2), lambda e: old_shuffle(n, 2, e)),
    ]:
        sampler = make()
        sampler.set_epoch(1)
        sampler.resume_at = resume_at
        assert list(sampler) == old(1).tolist()[resume_at:] and list(sampler) == old(2).tolist()
        for world in (2, 3):
            padded = list(itertools.islice(itertools.cycle(old(0).tolist()), -(-n // world) * world))
            for rank in range(world):
                part = RankSampler(make(), world, rank)
                part.resume_at = resume_at  # this rank's examples already drawn
                assert list(part) == padded[rank::world][resume_at:]


def _cache(directory, n):
    """A split of ``n`` examples of 1..300 tokens (``uint16`` lengths); only the offsets hold data."""
    lengths = np.random.default_rng(0).integers(1, 301, n)
    np.save(os.path.join(directory, "offsets.npy"), np.concatenate([[0], np.cumsum(lengths)]))
    with open(os.path.join(directory, "input_ids.npy"), "wb") as f:  # the header alone: no token is read here
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<i4", "fortran_order": False, "shape": (int(lengths.sum()),)}
        )


@pytest.mark.parametrize("grouped,bound", [(True, 12.0), (False, 5.0)])
def test_bytes_per_example_of_a_sampler_and_its_first_pass(tmp_path, grouped, bound):
    """Measured 10.3 (grouped: 2 for the lengths, 4 for the shuffle, 4 for the grouped order) and 4.0 (shuffle)
    bytes per example at 1M; main at 15ad657 peaked at 44.6 and 16.0 (int64 offsets, lengths and orders)."""
    n = 1_000_000
    _cache(str(tmp_path), n)
    tracemalloc.start()
    try:
        ds = MLMDataset(TokenArrays(str(tmp_path)), word_ids=False)
        sampler = LengthGroupedSampler(ds.lengths(), 32, seed=0) if grouped else ShuffleSampler(len(ds), seed=0)
        first = next(iter(sampler))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0 <= first < n and peak / n <= bound, f"{peak / n:.1f} bytes per example"
