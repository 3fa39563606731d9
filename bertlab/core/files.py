"""Atomic writes: a reader sees the old file (or directory) or the new one, never half of either.

A write that fills the disk (ENOSPC, a quota) is one ``BertlabError`` naming the path, with the temporary
removed and the previous file or directory left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator

from bertlab.core.errors import BertlabError


def _owner() -> str:
    """This process as it appears in temporary names: ``host-pid`` (dots and dashes in the host made ``_``)."""
    host = socket.gethostname().replace(".", "_").replace("-", "_")
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


# A temporary's name: ``.NAME.HOST-PID.random`` (``.NAME.HOST-PID.old-random`` for a swapped-out directory).
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?P<host>[^.\-]+)-(?P<pid>\d+)\.")


def sweep_debris(directory: str, name: str | None = None) -> list[str]:
    """Remove the temporaries that killed writers left in ``directory`` (of ``name`` only, when given).

    A temporary is debris when its HOST is this machine and its PID is gone; a writer on another machine
    sharing the directory, or a live one here, is left alone. Returns what was removed.
    """
    host = _owner().rsplit("-", 1)[0]
    removed = []
    if not os.path.isdir(directory):
        return removed
    for entry in os.listdir(directory):
        m = _TEMPORARY.match(entry)
        if not m or m["host"] != host or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        debris = os.path.join(directory, entry)
        if os.path.isdir(debris):
            shutil.rmtree(debris, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(debris)
        removed.append(debris)
    return removed


def disk_full(error: BaseException, directory: str) -> bool:
    """Whether ``error`` came from a full disk: ENOSPC or EDQUOT, as an ``OSError`` or in the message of a
    library that wraps it (safetensors, torch's zip writer), or any write error with no space left in
    ``directory``'s file system."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if any(s in text for s in ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded")):
        return True
    try:
        return shutil.disk_usage(directory).free < (1 << 20)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path: str, directory: bool = False, replace: bool = True) -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed onto ``path``.

    A file keeps ``path``'s suffix (``np.savez`` and ``to_csv`` see the extension they expect).
    ``directory=True`` yields an empty directory instead; an existing ``path`` is swapped out
    (``replace=True``) or, with ``replace=False``, kept: the first writer wins (a cache that
    concurrent builders fill). On an error nothing is renamed and the temporary is removed; the temporaries
    of a writer that was killed (``kill -9``) are removed by the next writer of ``path`` (``sweep_debris``).
    """
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    sweep_debris(parent, os.path.basename(target))  # what a killed writer of this path left
    prefix = f".{os.path.basename(target)}.{_owner()}."
    if directory:
        tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=os.path.splitext(target)[1], dir=parent)
        os.close(fd)
    existed = os.path.exists(target)
    try:
        try:
            yield tmp
        except Exception as e:  # noqa: BLE001 - whatever the writer raised, a full disk is the user's to fix
            if isinstance(e, BertlabError) or not disk_full(e, parent):
                raise
            kept = f"the previous {os.path.basename(target)} is unchanged" if existed else "nothing was written"
            raise BertlabError(
                f"{target}: the disk is full (no space left on device while writing it); {kept}. "
                "Free some space (or point the output elsewhere) and run again"
            ) from None
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


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path + ".lock"`` (``flock``: released when the holder exits, even by
    ``kill -9``), so that one process builds what several want and the others wait and read it."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_held: list[int] = []


def held_locks() -> tuple[int, ...]:
    """The file descriptors of the ``exclusive_dir`` locks this process holds: a child started to write into
    those directories inherits them (``pass_fds``), so a lock outlives a killed parent until its children die
    too (``bertlab.core.lifetime``)."""
    return tuple(_held)


@contextlib.contextmanager
def exclusive_dir(directory: str, what: str = "run directory") -> Iterator[None]:
    """Hold ``directory``'s own lock for as long as something writes into it; a second writer (another
    ``bertlab ablate`` on the same root, two arms that would share a directory) is refused at once, not queued.
    ``flock``: the lock goes with its last holder, even at ``kill -9``; children given ``held_locks()`` share it."""
    import fcntl

    from bertlab.core.errors import BertlabError

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".bertlab.lock"), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise BertlabError(
                f"{what} {directory} is in use by {holder}; wait for it to finish, or give this run another root"
            ) from None
        f.seek(0), f.truncate(), f.write(f"pid {os.getpid()} on {socket.gethostname()}"), f.flush()
        _held.append(f.fileno())
        try:
            yield
        finally:
            _held.remove(f.fileno())
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
