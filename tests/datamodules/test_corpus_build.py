"""``datamodules.corpus`` and ``datamodules.corpus_build``: byte-range shards, the content hash, shard-by-shard
tokenizing in worker processes, and a build killed mid-way that resumes (the plan: ``test_corpus_plan``)."""

import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
import tqdm

from datamodules import corpus, corpus_assembly, corpus_build, mlm_sequences
from datamodules.corpus import byte_ranges, content_hash, read_range
from datamodules.mlm import MLMDataModule
from tests.conftest import make_texts


def _corpus(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _items(ds) -> list[list[int]]:
    return [ds[i]["input_ids"].tolist() for i in range(len(ds))]


def test_byte_ranges_cut_at_line_starts_and_read_every_line_once(tmp_path):
    lines = [f"line {i} " + "x" * (i % 37) for i in range(500)] + ["", "  ", "last"]
    path = _corpus(tmp_path / "c.txt", lines)
    ranges = byte_ranges(path, 300)
    assert len(ranges) > 20 and ranges[0][0] == 0 and ranges[-1][1] == os.path.getsize(path)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert [d for lo, hi in ranges for d in read_range(path, lo, hi)] == [x.strip() for x in lines if x.strip()]


def test_content_hash_reads_a_file_only_when_it_changed(tmp_path, monkeypatch):
    path = _corpus(tmp_path / "c.txt", ["one", "two"])
    first = content_hash(path, str(tmp_path / "cache"))
    reads = []
    monkeypatch.setattr(corpus.sources, "check_utf8", lambda p: reads.append(p))
    assert content_hash(path, str(tmp_path / "cache")) == first and reads == []  # size + mtime: not read
    _corpus(tmp_path / "c.txt", ["one", "three"])
    assert content_hash(path, str(tmp_path / "cache")) != first and reads == [path]


def _dm(tiny_bert_dir, tmp_path, path, **kwargs):
    return MLMDataModule(tokenizer=tiny_bert_dir, corpus=[path], cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.mark.parametrize("mode", ["line_by_line", "packed"])
def test_shards_and_workers_change_no_sequence(tiny_bert_dir, tmp_path, monkeypatch, mode):
    texts, _ = make_texts(300, seed=21)
    path = _corpus(tmp_path / "c.txt", texts)
    one = _dm(tiny_bert_dir, tmp_path / "one", path, mode=mode, max_length=16, val_fraction=0.1, tokenize_workers=1)
    one.setup()
    monkeypatch.setattr(corpus_build, "SHARD_BYTES", 1000)  # ~20 shards
    monkeypatch.setattr(mlm_sequences, "BATCH", 7)  # packed blocks run across encoding batches
    many = _dm(tiny_bert_dir, tmp_path / "many", path, mode=mode, max_length=16, val_fraction=0.1, tokenize_workers=2)
    many.setup()
    for split in ("train", "val"):
        a, b = _items(one.datasets[split]), _items(many.datasets[split])
        if mode == "line_by_line":
            assert a == b
        else:  # each shard's last block is shorter; the text tokens and their order are the same
            specials = {one.tokenizer.cls_token_id, one.tokenizer.sep_token_id}
            text = [[t for s in x for t in s if t not in specials] for x in (a, b)]
            assert text[0] and text[0] == text[1] and len(b) > len(a)


def test_a_killed_build_resumes_without_redoing_finished_shards(tiny_bert_dir, tmp_path, monkeypatch):
    path = _corpus(tmp_path / "c.txt", make_texts(400, seed=22)[0])
    cache = str(tmp_path / "cache")
    monkeypatch.setattr(corpus_build, "SHARD_BYTES", 1500)
    log, delay, tokenize = tmp_path / "log", [0.3], corpus_build.tokenize_shard

    def logged(*args):
        time.sleep(delay[0])
        with open(log, "a") as f:
            f.write(os.path.basename(args[-1]) + "\n")
        return tokenize(*args)

    monkeypatch.setattr(corpus_build, "tokenize_shard", logged)
    build = _dm(tiny_bert_dir, tmp_path, path, val_fraction=0.1, tokenize_workers=1)
    child = multiprocessing.get_context("fork").Process(target=build.setup)  # a real process, killed for real
    child.start()
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 4):
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    # the forked child shared tqdm's write lock with this process and may have died holding it (a real stage is a
    # process of its own): take a fresh one, or the resumed build's progress bar would wait on it forever
    monkeypatch.setattr(tqdm.tqdm, "_lock", threading.RLock(), raising=False)
    (building,) = [d for d in os.listdir(os.path.join(cache, "tokens")) if d.endswith(".build")]
    finished = {f for f in os.listdir(os.path.join(cache, "tokens", building)) if f.startswith("shard-")}
    assert len(finished) >= 3 and not os.path.exists(os.path.join(cache, "tokens", building[: -len(".build")]))

    log.unlink()
    delay[0] = 0
    resumed = _dm(tiny_bert_dir, tmp_path, path, val_fraction=0.1, tokenize_workers=1)
    resumed.setup()
    redone = set(log.read_text().split())
    assert redone and not redone & finished  # only the missing shards were tokenized
    assert resumed.built_now == {"train": True, "val": True} and not os.path.exists(
        os.path.join(cache, "tokens", building)
    )
    fresh = _dm(tiny_bert_dir, tmp_path / "fresh", path, val_fraction=0.1)
    fresh.setup()
    for split in ("train", "val"):
        assert _items(resumed.datasets[split]) == _items(fresh.datasets[split])


def test_offsets_are_written_a_shard_at_a_time_and_equal_np_save(tmp_path):
    rng = np.random.default_rng(0)
    shards, every = [], []
    for i, n in enumerate([5, 0, 17, 1, 9]):  # an empty shard too
        lengths = rng.integers(1, 300, size=n).astype(np.int32)
        every.append(lengths)
        shards.append(str(tmp_path / f"shard-{i}.npz"))
        np.savez(shards[-1], train_lengths=lengths)
    out = str(tmp_path / "offsets.npy")
    n, total, longest = corpus_assembly.write_offsets(shards, "train_lengths", out)
    lengths = np.concatenate(every)
    expected = str(tmp_path / "expected.npy")
    np.save(expected, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    assert open(out, "rb").read() == open(expected, "rb").read()  # byte for byte, as caches built before
    assert (n, total, longest) == (len(lengths), int(lengths.sum()), int(lengths.max()))
