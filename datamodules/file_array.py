"""``FileArray``: a 1-D ``.npy`` file read slice by slice with ``pread``, never memory-mapped.

Training reads a few random examples per step from token caches that can be as large as the process.
The pages of a memory-mapped file count in the process's resident size once touched, and the kernel
reads ahead around each random fault: on a 1M-line corpus the mapped tokens added ~12 MB of resident
memory per training step (236 MB after 20 steps). ``pread`` goes through the page cache without mapping
anything into the process, so the resident size stays flat however large the cache and however long the
run. It costs one system call per slice, microseconds against a step of a tenth of a second or more.
"""

from __future__ import annotations

import os

import numpy as np


class FileArray:
    """The 1-D array in the ``.npy`` file ``path``: ``len()``, ``dtype``, contiguous slices ``a[i:j]``, items
    ``a[i]``, and ``np.asarray(a)`` for all of it."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(f)
            self.data_offset = f.tell()
        if len(shape) != 1:
            raise ValueError(f"{path}: a FileArray is 1-D, this array has shape {shape}")
        self.length = int(shape[0])
        self._fd: int | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice | int):
        if isinstance(key, (int, np.integer)):
            i = int(key) + self.length if key < 0 else int(key)
            if not 0 <= i < self.length:
                raise IndexError(f"{self.path}: index {key} out of range for {self.length} items")
            return self[i : i + 1][0]
        if not isinstance(key, slice):
            raise TypeError(f"FileArray takes slices and integers, not {type(key).__name__}")
        start, stop, step = key.indices(self.length)
        if step != 1:
            raise ValueError("FileArray takes contiguous slices (step 1)")
        size = max(stop - start, 0) * self.dtype.itemsize
        position = self.data_offset + start * self.dtype.itemsize
        chunks = []
        while size:
            chunk = os.pread(self._file(), size, position)
            if not chunk:
                raise OSError(f"{self.path}: ended {size} bytes early (the cache file was truncated)")
            chunks.append(chunk)
            size -= len(chunk)
            position += len(chunk)
        return np.frombuffer(b"".join(chunks), dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole array, read into memory (``np.asarray(a)``; for checks and tests, not per-step reads)."""
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def _file(self) -> int:
        # one descriptor per process: a forked DataLoader worker opens its own
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._pid == os.getpid():
            os.close(fd)
