"""Atomic writes: a reader sees the old file (or directory) or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str, directory: bool = False, replace: bool = True) -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed onto ``path``.

    A file keeps ``path``'s suffix (``np.savez`` and ``to_csv`` see the extension they expect).
    ``directory=True`` yields an empty directory instead; an existing ``path`` is swapped out
    (``replace=True``) or, with ``replace=False``, kept: the first writer wins (a cache that
    concurrent builders fill). On an error nothing is renamed and the temporary is removed.
    """
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    prefix = f".{os.path.basename(target)}."
    if directory:
        tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=os.path.splitext(target)[1], dir=parent)
        os.close(fd)
    try:
        yield tmp
        if not directory:
            os.replace(tmp, target)
        elif not os.path.exists(target):
            try:
                os.rename(tmp, target)
            except OSError:
                if replace or not os.path.exists(target):  # lost a race; the first writer's copy stays
                    raise
        elif replace:
            old = tempfile.mkdtemp(prefix=f"{prefix}old-", dir=parent)
            os.rename(target, os.path.join(old, "x"))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
