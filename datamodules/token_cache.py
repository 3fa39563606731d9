"""Tokenise once, cache on disk, read back example by example afterwards.

The cache key is (data fingerprint, tokenizer fingerprint, max_length, truncation), so a
second run with the same inputs reads the arrays back instead of re-tokenising. Arrays are
flat ``int32`` token streams plus ``int64`` offsets, both read from their files when an example is asked for
(``FileArray``, ``pread``): nothing per example is held in memory. ``lengths()`` (for the length-grouped sampler)
is the one per-example array, computed a block of offsets at a time in the smallest unsigned dtype that holds
the longest example (``uint8`` up to 255 tokens, ``uint16`` up to 65,535): 1–2 bytes per example instead of the
16 that the offsets and their ``int64`` difference took in memory before. The files are as they were.

How a text is cut (``head`` / ``tail`` / ``head_tail``, pairs longest-first) is ``bertlab.core.truncation``,
the same file that ships in exports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import numpy as np

from bertlab.core.errors import BertlabError
from bertlab.core.faults import fault_point
from bertlab.core.files import atomic_path, file_lock
from bertlab.core.fingerprint import fingerprint
from bertlab.core.truncation import TRUNCATIONS, SpecialTemplate
from datamodules.file_array import FileArray

CACHE_VERSION = "1"


def default_cache_dir() -> str:
    return os.environ.get("BERTLAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "bertlab"))


def tokenizer_fingerprint(tokenizer) -> str:
    backend = tokenizer.backend_tokenizer.to_str()
    return fingerprint(backend)


def special_template(tokenizer) -> SpecialTemplate:
    """The tokenizer's ``SpecialTemplate``; a tokenizer whose specials cannot be read is a ``BertlabError``."""
    try:
        return SpecialTemplate.from_tokenizer(tokenizer)
    except ValueError as e:
        raise BertlabError(f"{e}; bertlab needs a tokenizer that puts its special tokens around the text") from None


def tokenize(
    tokenizer,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    truncation: str = "head",
    head_tokens: int | None = None,
):
    """Token ids (and token types) of each text with special tokens, cut to ``max_length``."""
    if truncation not in TRUNCATIONS:
        raise BertlabError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    template = special_template(tokenizer)
    budget = max_length - template.n_special(pairs is not None)
    if budget < 1:
        raise BertlabError(f"max_length {max_length} leaves no room for text after the special tokens")
    head_tokens = budget // 4 if head_tokens is None else head_tokens
    enc_a = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    enc_b = tokenizer(pairs, add_special_tokens=False, verbose=False)["input_ids"] if pairs is not None else None
    ids_out, types_out = [], []
    for n, a in enumerate(enc_a):
        ids, types = template.join(a, enc_b[n] if enc_b is not None else None, budget, truncation, head_tokens)
        ids_out.append(ids)
        if types is not None:
            types_out.append(types)
    return ids_out, (types_out if enc_b is not None else None)


class TokenArrays:
    """Ragged token arrays: one flat stream and its offsets on disk, read example by example."""

    def __init__(self, directory: str, block: int = 1 << 16):
        self.directory = directory
        self.ids = FileArray(os.path.join(directory, "input_ids.npy"))
        self.offsets = FileArray(os.path.join(directory, "offsets.npy"))
        types = os.path.join(directory, "token_type_ids.npy")
        self.types = FileArray(types) if os.path.exists(types) else None
        self.block = block  # offsets read at a time by ``lengths()``

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def span(self, i: int) -> tuple[int, int]:
        """Where example ``i`` lies in the flat token stream (and in arrays aligned with it)."""
        a, b = self.offsets[i : i + 2]
        return int(a), int(b)

    def lengths(self) -> np.ndarray:
        """Every example's token count, in the smallest unsigned dtype that holds the longest."""
        blocks = range(0, len(self), self.block)
        diff = lambda i: np.diff(self.offsets[i : i + self.block + 1])  # noqa: E731
        out = np.empty(len(self), np.min_scalar_type(max((int(diff(i).max()) for i in blocks), default=0)))
        for i in blocks:
            out[i : i + self.block] = diff(i)
        return out

    def get(self, i: int) -> dict:
        a, b = self.span(i)
        out = {"input_ids": np.asarray(self.ids[a:b], dtype=np.int64)}
        if self.types is not None:
            out["token_type_ids"] = np.asarray(self.types[a:b], dtype=np.int64)
        return out


def write_arrays(directory: str, ids: list[list[int]], types: list[list[int]] | None) -> None:
    write_array_chunks(directory, [(ids, types)])


def write_array_chunks(directory: str, chunks: Iterable[tuple[list[list[int]], list[list[int]] | None]]) -> None:
    """Write ragged arrays chunk by chunk: tokens stream to disk, so memory holds one chunk at a time.

    Each chunk is ``(ids, types)`` for consecutive examples; ``types`` is None in every chunk or in none.
    """
    lengths: list[np.ndarray] = []
    raw_ids, raw_types = os.path.join(directory, "input_ids.raw"), os.path.join(directory, "types.raw")
    has_types, lo, hi = None, 0, 0
    with open(raw_ids, "wb") as f_ids, open(raw_types, "wb") as f_types:
        for ids, types in chunks:
            has_types = types is not None if has_types is None else has_types
            lengths.append(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
            n = int(lengths[-1].sum())
            f_ids.write(np.fromiter((t for x in ids for t in x), dtype=np.int32, count=n).tobytes())
            if has_types:
                flat = np.fromiter((t for x in types for t in x), dtype=np.int64, count=n)
                lo, hi = min(lo, int(flat.min(initial=0))), max(hi, int(flat.max(initial=0)))
                f_types.write(flat.tobytes())
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths) if lengths else np.zeros(0, np.int64))])
    np.save(os.path.join(directory, "offsets.npy"), offsets.astype(np.int64))
    _raw_to_npy(raw_ids, os.path.join(directory, "input_ids.npy"), np.int32, np.int32)
    if has_types:
        small = -128 <= lo and hi <= 127
        _raw_to_npy(raw_types, os.path.join(directory, "token_type_ids.npy"), np.int64, np.int8 if small else np.int32)
    else:
        os.remove(raw_types)


def _raw_to_npy(raw: str, path: str, dtype, out_dtype, block: int = 1 << 22) -> None:
    """A raw binary stream as a ``.npy`` file, copied block by block with plain reads and writes: never
    whole in memory, and not memory-mapped either (every page of a mapped file the copy touches would count
    in this process's resident size: ~0.6 GB for the two token files of a 1M-line corpus)."""
    dtype, out_dtype = np.dtype(dtype), np.dtype(out_dtype)
    n = os.path.getsize(raw) // dtype.itemsize
    header = {"descr": np.lib.format.dtype_to_descr(out_dtype), "fortran_order": False, "shape": (n,)}
    with open(raw, "rb") as src, open(path, "wb") as dst:
        np.lib.format.write_array_header_1_0(dst, header)
        while chunk := src.read(block * dtype.itemsize):
            dst.write(np.frombuffer(chunk, dtype=dtype).astype(out_dtype, copy=False).data)
    os.remove(raw)


def cache_key(**parts) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return fingerprint(blob, length=24)


def cached_arrays(
    cache_dir: str, key: str, build: Callable[[], tuple | Iterable[tuple]], meta: dict | None = None
) -> tuple[TokenArrays, bool]:
    """Open the arrays under ``cache_dir/key``, building them atomically first if absent.

    Returns (arrays, built_now). Concurrent builders take turns on a lock per entry: the first builds, the
    others wait and read its arrays (the atomic rename still guards a reader that takes no lock).
    """
    final = os.path.join(cache_dir, "tokens", key)
    if os.path.isfile(os.path.join(final, "meta.json")):
        return TokenArrays(final), False
    with file_lock(os.path.join(cache_dir, "locks", f"tokens-{key}")):
        if os.path.isfile(os.path.join(final, "meta.json")):  # built while this process waited
            return TokenArrays(final), False
        _build(final, key, build, meta)
    return TokenArrays(final), True


def _build(final: str, key: str, build: Callable[[], tuple | Iterable[tuple]], meta: dict | None) -> None:
    with atomic_path(final, directory=True, replace=False) as tmp:
        fault_point("tokenize")
        built = build()  # (ids, types), or an iterator of such chunks
        write_array_chunks(tmp, [built] if isinstance(built, tuple) else built)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            n = len(FileArray(os.path.join(tmp, "offsets.npy"))) - 1
            json.dump({"key": key, "n": n, **(meta or {})}, f, indent=1, default=str)
        fault_point("cache_write")
