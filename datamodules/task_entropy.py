"""Entropy scores: how much the task prediction moves when a word is masked (the seed author's idea).

Model_0, the task classifier, predicts a class distribution p(s) for an unlabelled domain sentence s,
with entropy H(s). Masking word i (every piece of it replaced by [MASK]) gives p(s∖i) with entropy
H_i. A word's score is

* ``entropy``: |H_i − H(s)|, or
* ``kl``: KL(p(s) ‖ p(s∖i)), which also sees a change of class that keeps the entropy,

and every piece of the word carries it. A word whose masking cannot change the prediction scores
exactly 0. Unlike Gu et al.'s buffer rule this needs no labels and no Model_b: the classifier is run
directly on the corpus. The original and all L masked variants of a sentence go through Model_0 in
one forward (same length and padding, so no cross-batch rounding between them): ``masked_variants``
builds them, ``divergence_scores`` turns their probabilities into scores, and ``task_entropy_scores``
does both for one sentence. ``corpus_scoring`` packs the variants of many sentences into one forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from datamodules.buffer_rule import word_runs

DIVERGENCES = ("entropy", "kl")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row of ``q``, in nats; 0 · log 0 = 0."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)


def masked_variants(
    input_ids: Sequence[int], word_ids: Sequence[int], mask_id: int
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``[1 + L, len]`` rows: the sentence, then each of its L words masked; and the words' ``(start, end)``
    (a word already all [MASK] is skipped)."""
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    units = [(a, b) for a, b in word_runs(list(word_ids)) if not bool((ids[a:b] == mask_id).all())]
    rows = ids.repeat(len(units) + 1, 1)
    for r, (a, b) in enumerate(units, start=1):
        rows[r, a:b] = mask_id
    return rows, units


def divergence_scores(p: torch.Tensor, units: list[tuple[int, int]], length: int, divergence: str) -> np.ndarray:
    """``float32`` score per position from the probabilities ``p`` ``[1 + L, classes]`` of ``masked_variants``."""
    scores = np.zeros(length, dtype=np.float32)
    if not units:
        return scores
    p = p.double()
    if divergence == "entropy":
        h = _entropy(p)
        moved = (h[1:] - h[0]).abs()
    else:
        moved = _kl(p[0], p[1:])
    # identical distributions must give exactly 0, not a rounding residue of the subtraction
    moved = torch.where((p[1:] == p[0]).all(-1), 0.0, moved.clamp_min(0.0))
    for (a, b), value in zip(units, moved.tolist()):
        scores[a:b] = value
    return scores


def check_divergence(divergence: str) -> None:
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")


@torch.inference_mode()
def task_entropy_scores(
    prob_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    input_ids: Sequence[int],
    word_ids: Sequence[int],
    mask_id: int,
    divergence: str = "entropy",
) -> np.ndarray:
    """``float32`` score per position of ``input_ids`` (specials included, there with ``word_ids`` -1 and score 0)."""
    check_divergence(divergence)
    rows, units = masked_variants(input_ids, word_ids, mask_id)
    if not units:
        return np.zeros(len(rows[0]), dtype=np.float32)
    return divergence_scores(prob_fn(rows, torch.ones_like(rows)), units, rows.shape[1], divergence)
