"""Stable fingerprints: the same in every process and on every machine (never Python's salted ``hash()``).

``fingerprint`` names content for cache keys and hand-over checks; ``stable_hash`` turns parts
into an integer seed. ``file_identity`` / ``dir_identity`` stand for files and model directories
in a fingerprint without reading them.
"""

from __future__ import annotations

import hashlib
import os


def fingerprint(*parts: object, sep: str = "\x1f", length: int = 16) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``parts`` (as text, joined by ``sep``)."""
    h = hashlib.sha256()
    for i, part in enumerate(parts):
        if i and sep:
            h.update(sep.encode("utf-8"))
        h.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
    return h.hexdigest()[:length]


def stable_hash(*parts: object) -> int:
    """A 64-bit integer of ``parts``, e.g. a per-text seed; the value is part of results, so it never changes."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def file_identity(path: str) -> str:
    """``path@size:mtime``: changes when the file is replaced or edited."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}@{st.st_size}:{st.st_mtime_ns}"


def dir_identity(path: str) -> str:
    """A model directory's path plus a short hash of its files' names, sizes and mtimes."""
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    parts = [f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in entries if e.is_file()]
    return f"{os.path.realpath(path)}@{stable_hash(*parts):016x}"
