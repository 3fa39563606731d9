import os

import numpy as np
import pytest

from bertlab.core.errors import BertlabError
from bertlab.core.models import load_tokenizer
from datamodules.file_array import FileArray
from datamodules.token_cache import SpecialTemplate, TokenArrays, cache_key, cached_arrays, tokenize, write_arrays


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    return load_tokenizer(tiny_bert_dir)


def _words(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_template_of_bert(tok):
    t = SpecialTemplate.from_tokenizer(tok)
    assert (t.prefix, t.suffix, t.middle, t.pair_suffix) == (
        (tok.cls_token_id,),
        (tok.sep_token_id,),
        (tok.sep_token_id,),
        (tok.sep_token_id,),
    )
    assert t.pair_types == (0, 0, 0, 1, 1)


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("head", ["the", "coffee", "was", "and"]),
        ("tail", ["my", "kids", "bought", "this"]),
        ("head_tail", ["the", "kids", "bought", "this"]),
    ],
)
def test_truncation_modes_keep_the_right_tokens(tok, mode, expected):
    text = "the coffee was and very product flavour my kids bought this"
    ids, _ = tokenize(tok, [text], None, max_length=6, truncation=mode, head_tokens=1)
    assert _words(tok, ids[0]) == ["[CLS]", *expected, "[SEP]"]


def test_head_tail_default_keeps_a_quarter_from_the_head(tok):
    text = " ".join(["the"] * 10 + ["kids"] * 30)
    ids, _ = tokenize(tok, [text], None, max_length=18, truncation="head_tail")
    words = _words(tok, ids[0])[1:-1]
    assert len(words) == 16 and words[:4] == ["the"] * 4 and words[4:] == ["kids"] * 12


def test_pairs_truncate_longest_first_with_token_types(tok):
    ids, types = tokenize(tok, ["the coffee was and very product"], ["my kids"], max_length=8, truncation="head")
    assert _words(tok, ids[0]) == ["[CLS]", "the", "coffee", "was", "[SEP]", "my", "kids", "[SEP]"]
    assert types[0] == [0, 0, 0, 0, 0, 1, 1, 1]


def test_short_texts_are_untouched_and_bad_settings_rejected(tok):
    ids, _ = tokenize(tok, ["tea"], None, max_length=32, truncation="tail")
    assert _words(tok, ids[0]) == ["[CLS]", "tea", "[SEP]"]
    with pytest.raises(BertlabError, match="truncation must be one of head, tail, head_tail"):
        tokenize(tok, ["tea"], None, 32, truncation="middle")
    with pytest.raises(BertlabError, match="leaves no room"):
        tokenize(tok, ["tea"], None, 2)


def test_cache_is_built_once_and_read_back_from_disk(tmp_path, tok):
    calls = []

    def build():
        calls.append(1)
        return tokenize(tok, ["the coffee", "tea", "my kids bought this"], None, 16)

    key = cache_key(data="d", max_length=16)
    first, built = cached_arrays(str(tmp_path), key, build)
    second, built_again = cached_arrays(str(tmp_path), key, build)
    assert (built, built_again, len(calls)) == (True, False, 1)
    assert isinstance(second.ids, FileArray) and isinstance(second.offsets, FileArray)  # never whole in memory
    assert [len(second.get(i)["input_ids"]) for i in range(3)] == [4, 3, 6]
    assert np.array_equal(first.get(2)["input_ids"], second.get(2)["input_ids"])
    assert cache_key(data="d", max_length=16) != cache_key(data="d", max_length=32)
    assert os.listdir(tmp_path / "tokens") == [key]  # no temporary directories left behind


def _build_slowly(cache_dir: str, log: str) -> bool:
    """Build one cache entry, taking long enough that a second builder arrives while it works."""
    import time

    def build():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return [[1, 2, 3], [4, 5]], None

    return cached_arrays(cache_dir, "same-key", build)[1]


def test_two_processes_build_an_entry_once(tmp_path):
    """A lock per entry: the second process waits for the first and reads its arrays instead of tokenising too."""
    import multiprocessing

    log = str(tmp_path / "builds.log")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        built = pool.starmap(_build_slowly, [(str(tmp_path), log)] * 2)
    assert sorted(built) == [False, True]
    assert len(open(log).read().split()) == 1
    assert not [n for n in os.listdir(tmp_path / "tokens") if n.startswith(".")]  # no temporaries left


@pytest.mark.parametrize(
    ("dtype", "out_dtype", "n"), [("int32", "int32", 0), ("int32", "int32", 1000), ("int64", "int8", 77)]
)
def test_raw_stream_becomes_the_npy_file_np_save_writes(tmp_path, dtype, out_dtype, n):
    """The copy reads and writes in blocks (no memory map, whose pages would count in RSS), cut mid-stream here."""
    from datamodules.token_cache import _raw_to_npy

    values = np.random.default_rng(0).integers(-100, 100, n).astype(dtype)
    values.tofile(tmp_path / "x.raw")
    _raw_to_npy(str(tmp_path / "x.raw"), str(tmp_path / "x.npy"), dtype, out_dtype, block=64)
    np.save(tmp_path / "ref.npy", values.astype(out_dtype))
    assert (tmp_path / "x.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert not (tmp_path / "x.raw").exists()


@pytest.mark.parametrize("longest,dtype", [(200, np.uint8), (300, np.uint16), (70_000, np.uint32)])
def test_lengths_are_the_offsets_differences_in_the_smallest_unsigned_dtype(tmp_path, longest, dtype):
    lengths = np.random.default_rng(0).integers(0, 200, 1_000)  # the longest one decides the dtype
    lengths[517] = longest
    write_arrays(str(tmp_path), [[7] * n for n in lengths], None)
    arrays = TokenArrays(str(tmp_path), block=64)  # many blocks, the last one short
    assert arrays.lengths().dtype == dtype and np.array_equal(arrays.lengths(), lengths)
    assert arrays.span(517) == (int(lengths[:517].sum()), int(lengths[:518].sum())) and len(arrays) == 1_000
