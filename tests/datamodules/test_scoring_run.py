"""Resumable chunked scoring: the same result after a kill, only the missing chunks recomputed, progress logged."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from datamodules.scoring_run import chunk_bounds, remove_parts, run_in_chunks, scoring_threads

LENGTHS = np.array([5, 7, 3, 9, 4, 6, 8, 2, 5, 5])


def score(lo, hi):
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    return np.arange(offsets[lo], offsets[hi], dtype=np.float32) * 0.5


def test_chunks_cover_every_row_once_and_depend_only_on_lengths():
    bounds = chunk_bounds(LENGTHS, chunk_tokens=12)
    assert bounds == [(0, 2), (2, 4), (4, 7), (7, 10)]
    assert chunk_bounds(LENGTHS, chunk_tokens=1000) == [(0, 10)] and chunk_bounds(np.zeros(0), 5) == []


def test_a_killed_run_resumes_from_its_finished_chunks(tmp_path, caplog):
    parts, calls = str(tmp_path / "parts"), []

    def dies_on_the_third_chunk(lo, hi):
        calls.append(lo)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would, part-way
        return score(lo, hi)

    with pytest.raises(KeyboardInterrupt):
        run_in_chunks(LENGTHS, dies_on_the_third_chunk, parts, chunk_tokens=12)
    assert sorted(os.listdir(parts)) == ["rows-0000000000-0000000002.npy", "rows-0000000002-0000000004.npy"]
    calls.clear()
    with caplog.at_level(logging.INFO):
        out = run_in_chunks(LENGTHS, lambda lo, hi: calls.append(lo) or score(lo, hi), parts, chunk_tokens=12)
    assert calls == [4, 7]  # only the chunks the killed run had not finished
    assert np.array_equal(out, score(0, len(LENGTHS)))
    assert "2 resumed" in caplog.text and "tokens/s" in caplog.text
    remove_parts(parts)
    assert not os.path.exists(parts)


def test_all_cores_unless_omp_num_threads_says_otherwise(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with scoring_threads() as n:
        assert n == len(os.sched_getaffinity(0)) == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with scoring_threads() as n:
        assert n == before
    assert torch.get_num_threads() == before
