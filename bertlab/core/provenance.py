"""Provenance: which code, libraries, machine and command made a record.

Every metrics file (``fit_metrics.json``, ``test_metrics.json``), a pipeline's ``summary.json`` and every run
of an ablation carries ``provenance()``. Two records come from the same *training code* when their ``code``
hashes are equal: a hash of every tracked-or-not ``.py`` file of the four packages as they are on disk, so
an uncommitted edit changes it and a commit that touches only docs or results does not. ``commit`` and
``dirty`` say where that code lives in git (``dirty``: the packages differ from the commit).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from functools import lru_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("bertlab", "lightning_modules", "datamodules", "callbacks")
LIBRARIES = {"torch": "torch", "transformers": "transformers", "pytorch-lightning": "pytorch_lightning"}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def code_hash() -> str:
    """SHA-256 (16 hex digits) over the path and bytes of every ``.py`` file of the packages."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, ROOT).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(f.read() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def _repository() -> tuple[str | None, bool | None]:
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", *PACKAGES)
    return commit, bool(status)


def _version(module: str) -> str | None:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            from importlib.metadata import version

            return version(module.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a missing library is recorded as None
            return None
    return getattr(mod, "__version__", None)


def hardware() -> str:
    """CPU model and core count, and the GPU's name when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = f"{cpu}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out += f"; {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return out


def provenance(precision: str | None = None, allocator: str | None = None, command: list[str] | None = None) -> dict:
    """The record's ``provenance`` object: code, libraries, precision, threads, allocator (as the caller found
    it: ``bertlab.allocator.allocator_in_use``, which the base may not import), hardware, command."""
    commit, dirty = _repository()
    torch = sys.modules.get("torch")
    return {
        "commit": commit,
        "dirty": dirty,
        "code": code_hash(),
        "versions": {"bertlab": _version("bertlab")} | {name: _version(mod) for name, mod in LIBRARIES.items()},
        "python": platform.python_version(),
        "precision": precision,
        "threads": torch.get_num_threads() if torch is not None else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "allocator": allocator,
        "hardware": hardware(),
        "command": list(command if command is not None else sys.argv),
    }
