"""Samplers: the order in which training examples are drawn.

Every order is a function of (seed, epoch) alone, never of a generator's state or of the global one, so a fit
resumed from any checkpoint draws the very order of the run it continues: ``ShuffleSampler`` (the plain shuffle,
``group_by_length: false``) and ``LengthGroupedSampler`` (batches of similar length, less padding) both skip
``resume_at`` examples of the next pass, which ``callbacks.rng_state`` sets on a resume in the middle of an epoch.
The two ``Epoch`` samplers also tell an MLM masker the epoch, because a static masker picks its masked copy by it
and a dynamic one reseeds per epoch. Lightning's DDP wrapper passes ``set_epoch`` on to them.

``RankSampler`` gives one DDP rank its part of such an order, as ``DistributedSampler`` does (padded to a
multiple of the ranks with the pass's first examples, then every ``num_replicas``-th from ``rank``), without
materialising the order, and skips what an interrupted pass drew (``resume_at``) exactly.

Memory is per example, so it is kept small: an order is ``int32`` below 2**31 examples (``permutation``, the very
shuffle of ``rng.permutation(n)``), lengths are kept in the smallest unsigned dtype that holds them, and the
length-grouped order is sorted in place and gathered into one preallocated array. A pass holds 4 bytes per example
(its order), the length-grouped sampler 1–2 more (the lengths), and building its order peaks at ~10.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler, Sampler


def permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """``rng.permutation(n)``, drawn identically (``Generator.permutation(n)`` shuffles ``arange(n)`` in place, the
    same swaps whatever the dtype), in ``int32`` where ``n`` fits it: half the bytes per example."""
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    rng.shuffle(order)
    return order


def compact(lengths) -> np.ndarray:
    """Non-negative integer ``lengths`` in the smallest unsigned dtype that holds the longest (``uint16`` below
    65,536); a copy only when they are not in it already."""
    lengths = np.asarray(lengths)
    return lengths.astype(np.min_scalar_type(int(lengths.max(initial=0))), copy=False)


class ShuffleSampler(Sampler[int]):
    """A shuffled order of ``n`` examples that depends only on (seed, epoch); the epoch advances at every
    ``__iter__`` (and Lightning sets it at each epoch's start). ``resume_at`` examples of the next pass are skipped."""

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.resume_at = 0  # examples of the next pass to skip: a fit resumed mid-epoch (callbacks.rng_state)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, rng: np.random.Generator) -> np.ndarray:
        return permutation(rng, self.n)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        skip, self.resume_at = self.resume_at, 0
        return itertools.islice((int(i) for i in self.order(rng)), skip, None)


class LengthGroupedSampler(ShuffleSampler):
    """Shuffled order in which neighbours have similar lengths, so padding is small.

    Shuffle, cut into mega-batches of ``mega_batch_mult × batch_size``, sort each by length (longest first,
    ties in shuffled order), then shuffle the order of the resulting batches (as HF's ``group_by_length``). The
    order depends only on (seed, epoch); the epoch advances at every ``__iter__``. A fit resumed mid-epoch sets
    ``resume_at`` to skip the examples the interrupted pass already drew.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, mega_batch_mult: int = 50):
        super().__init__(len(lengths), seed)
        self.lengths = compact(lengths)
        self.batch_size = batch_size
        self.mega = max(batch_size * mega_batch_mult, batch_size)

    def order(self, rng: np.random.Generator) -> np.ndarray:
        perm, n, size = permutation(rng, self.n), self.n, self.batch_size
        if not n:
            return perm
        for start in range(0, n, self.mega):  # each mega-batch sorted in place
            chunk = perm[start : start + self.mega]
            chunk[:] = chunk[np.argsort(-self.lengths[chunk].astype(np.int64), kind="stable")]
        # a mega-batch is a whole number of batches, so batch b is perm[b*size : (b+1)*size], the last one short
        full, short = divmod(n, size)
        order = rng.permutation(full + (short > 0))
        rows, out = perm[: full * size].reshape(full, size), np.empty_like(perm)
        k = int(np.flatnonzero(order == full)[0]) if short else full  # where the short batch goes
        np.take(rows, order[:k], axis=0, out=out[: k * size].reshape(k, size), mode="clip")
        out[k * size : k * size + short] = perm[full * size :]
        np.take(rows, order[k + 1 :], axis=0, out=out[k * size + short :].reshape(-1, size), mode="clip")
        return out


class EpochSampler(ShuffleSampler):
    """The plain shuffle that also tells the masker the epoch (static masks pick their copy by it)."""

    def __init__(self, data, masker, seed: int):
        super().__init__(len(data), seed)
        self.masker = masker

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.masker.set_epoch(epoch)


class LengthGroupedEpochSampler(LengthGroupedSampler):
    """Length-grouped order (less padding, as for classification) that also tells the masker the epoch."""

    def __init__(self, lengths, batch_size: int, masker, seed: int):
        super().__init__(lengths, batch_size, seed=seed)
        self.masker = masker

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.masker.set_epoch(epoch)


class RankSampler(DistributedSampler):
    """Rank ``rank``'s part of ``inner``'s order (a ``DistributedSampler``, so Lightning does not wrap it in its
    ``DistributedSamplerWrapper``, which holds a list of the whole order per rank).

    Rank r draws positions r, r + W, r + 2W, … of the pass, the pass padded with its own first examples to a
    multiple of W = ``num_replicas``. ``resume_at``: this rank's examples of the next pass to skip.
    """

    def __init__(self, inner: Sampler[int], num_replicas: int, rank: int):
        self.inner, self.num_replicas, self.rank = inner, num_replicas, rank
        self.num_samples = -(-len(inner) // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.resume_at = 0

    @property
    def generator(self):
        return getattr(self.inner, "generator", None)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        skip, self.resume_at = self.resume_at, 0
        return itertools.islice(self._part(iter(self.inner)), skip, None)

    def _part(self, order: Iterator[int]) -> Iterator[int]:
        head: list[int] = []  # the pass's first examples: the padding
        pad = self.total_size - len(self.inner)
        for n, i in enumerate(order):
            if len(head) < pad:
                head.append(i)
            if n % self.num_replicas == self.rank:
                yield i
        for n in range(len(self.inner), self.total_size):
            if n % self.num_replicas == self.rank:
                yield head[(n - len(self.inner)) % max(len(head), 1)]
