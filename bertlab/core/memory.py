"""Giving freed memory back to the operating system (glibc), so that peak RSS is what is live.

glibc's ``malloc`` keeps freed blocks inside its heap: after a large transient structure is dropped
(the texts of a 1M-line corpus, once their tokens are cached), the process's resident size stays
where it was, and what comes next (the model, its activations) stacks on top. ``trim_heap`` asks
glibc to return the free pages (``malloc_trim(0)``); elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim``); True when something was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
