"""Fingerprints are stable: their values are cache keys and hand-over checks written to disk, so a
refactor must not change them. The expected values are the formulas the code used before them."""

from __future__ import annotations

import hashlib

import pandas as pd

from bertlab.core.fingerprint import fingerprint, stable_hash
from datamodules.sources import text_fingerprint


def test_fingerprint_is_sha256_of_the_joined_parts():
    assert fingerprint("a", 1, "b") == hashlib.sha256(b"a\x1f1\x1fb").hexdigest()[:16]
    assert fingerprint("ab", "c", sep="", length=24) == hashlib.sha256(b"abc").hexdigest()[:24]
    assert fingerprint("x", b"\x00y", sep="") == hashlib.sha256(b"x\x00y").hexdigest()[:16]
    assert fingerprint("a", "b") != fingerprint("ab")


def test_text_fingerprint_keeps_its_old_value():
    df = pd.DataFrame({"text": ["good tea", "bad coffee"], "label": ["pos", "neg"]})
    h = hashlib.sha256()
    h.update(b"text")
    h.update(b"good tea\x1fbad coffee")
    assert text_fingerprint(df) == h.hexdigest()[:16]  # soft-label files written before still match


def test_stable_hash_is_the_same_seed_everywhere():
    digest = hashlib.blake2b(b"seed\x1f7", digest_size=8).digest()
    assert stable_hash("seed", 7) == int.from_bytes(digest, "big")
