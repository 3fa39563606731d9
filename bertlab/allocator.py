"""The memory allocator a ``bertlab`` process runs on: tcmalloc where it is installed, else glibc's malloc.

Training allocates and frees activations of a new shape every step (batches are as wide as their longest
row). glibc's heap keeps the freed blocks resident and fragments, so the resident size climbs step by step
(0.58 -> 1.96 GB over a 20-step MLM run). tcmalloc (gperftools' ``libtcmalloc_minimal``, Debian
``libtcmalloc-minimal4``) keeps size-classed spans instead. In ``make bench`` (MiniLM, batch 32, 2 threads)
it lowered every bertlab peak by 0.40-0.82 GB and ran 3-12 % faster; a 1M-line MLM run peaks at 1.97 GB
instead of 2.24. jemalloc's defaults saved as much memory but cost 21-30 % speed, and glibc's own tunables
cost more (docs/performance.md, "Memory").

An allocator must be loaded before the interpreter allocates, so the ``bertlab`` command (``bertlab``,
``python -m bertlab``, ``python -m bertlab.cli``) re-executes itself once with the library in
``LD_PRELOAD``; the processes it starts (DDP workers, pipeline stages, data workers) inherit it.
``BERTLAB_ALLOCATOR`` chooses: ``auto`` (default: tcmalloc if installed), ``tcmalloc`` (an error if it is
not), ``system`` (glibc's malloc). Every run logs the allocator it got.

This module imports nothing but the standard library: it runs before torch is imported.
"""

from __future__ import annotations

import os
import sys

CHOICES = ("auto", "tcmalloc", "system")
LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
INSTALL = "apt-get install libtcmalloc-minimal4"
ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
_TRIED = "_BERTLAB_ALLOCATOR_PRELOADED"  # set on the re-executed process: never re-execute twice


def library_dirs() -> list[str]:
    arch = os.uname().machine
    return [
        f"/usr/lib/{arch}-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        os.path.join(sys.prefix, "lib"),
        *([os.path.join(os.environ["CONDA_PREFIX"], "lib")] if os.environ.get("CONDA_PREFIX") else []),
    ]


def find_tcmalloc(dirs: list[str] | None = None) -> str | None:
    for name in LIBRARIES:
        for directory in dirs if dirs is not None else library_dirs():
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


class AllocatorError(Exception):
    """A ``BERTLAB_ALLOCATOR`` that cannot be honoured (kept free of project imports, like this module)."""


def chosen(environ) -> str:
    """``BERTLAB_ALLOCATOR`` as given (``auto`` when unset), not yet checked."""
    return environ.get("BERTLAB_ALLOCATOR", "").strip().lower() or "auto"


def to_preload(environ: dict, dirs: list[str] | None = None) -> str | None:
    """The library this process should be re-executed with, or None to run as it is."""
    choice = chosen(environ)
    if choice not in CHOICES:
        raise AllocatorError(f"BERTLAB_ALLOCATOR must be one of {', '.join(CHOICES)}, not {choice!r}")
    preloaded = environ.get("LD_PRELOAD", "")
    if choice == "system" or environ.get(_TRIED) or any(name in preloaded for name in ALLOCATORS):
        return None  # chosen off, done already, or the user preloaded an allocator of their own
    library = find_tcmalloc(dirs)
    if library is None and choice == "tcmalloc":
        raise AllocatorError(f"BERTLAB_ALLOCATOR=tcmalloc, but tcmalloc is not installed ({INSTALL})")
    return library


def preload_environment(environ: dict) -> dict | None:
    """``environ`` with the allocator preloaded, for a process to start on it; None when none should be."""
    library = to_preload(environ)
    if library is None:
        return None
    preload = " ".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))
    env = {**environ, "LD_PRELOAD": preload, _TRIED: "1"}
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 62))  # no stderr line per 1 GB block
    return env


def preload_and_reexecute() -> None:
    """Re-execute this command with the allocator preloaded, when one should be and is not yet."""
    try:
        env = preload_environment(dict(os.environ))
    except AllocatorError as e:
        print(f"bertlab: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if env is not None:
        sys.stdout.flush(), sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def allocator_in_use() -> str:
    """What this process allocates with, for the run's log, read from its mapped libraries."""
    try:
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:  # no /proc (macOS): nothing was preloaded by bertlab there either
        return "the system's malloc"
    for path in sorted(mapped):
        name = os.path.basename(path)
        if name.startswith(tuple(f"lib{a}" for a in ALLOCATORS)):
            return f"{name.split('.so')[0][3:]} ({path})"
    if chosen(os.environ) == "system":
        return "glibc malloc (BERTLAB_ALLOCATOR=system)"
    if find_tcmalloc() is None:
        return f"glibc malloc (tcmalloc not installed: {INSTALL}; 0.4-0.8 GB less peak memory in make bench)"
    return "glibc malloc (bertlab was imported, not started as a command)"
