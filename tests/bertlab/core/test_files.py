"""``atomic_path``: a reader sees the old file or directory or the new one, never a half-written one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bertlab.core.files import atomic_path


def test_a_file_appears_whole_and_keeps_its_suffix(tmp_path):
    target = tmp_path / "deep" / "probs.npz"
    with atomic_path(str(target)) as tmp:
        assert tmp.endswith(".npz") and not target.exists()
        np.savez(tmp, x=np.arange(3))
    assert np.load(target)["x"].tolist() == [0, 1, 2]
    assert os.listdir(target.parent) == ["probs.npz"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


def test_a_directory_is_swapped_in_or_kept_when_the_first_writer_wins(tmp_path):
    target = tmp_path / "export"
    for content, replace in (("one", True), ("two", True), ("three", False)):
        with atomic_path(str(target), directory=True, replace=replace) as tmp:
            (open(os.path.join(tmp, "config.json"), "w")).write(content)
    assert (target / "config.json").read_text() == "two"  # replace=False kept the existing copy
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_a_killed_writers_temporaries_are_swept_by_the_next_writer(tmp_path):
    """``kill -9`` while writing leaves ``.NAME.HOST-PID.*``; the next writer of NAME removes it, but not a live
    writer's, another machine's or another name's."""
    import subprocess
    import sys

    from bertlab.core.files import _owner

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host, pid = _owner().rsplit("-", 1)[0], int(dead.stdout)
    stale = [f".export.{host}-{pid}.abc123", f".export.{host}-{pid}.old-xyz"]
    kept = [f".export.{host}-{os.getpid()}.live", f".export.otherhost-{pid}.abc", f".cache.{host}-{pid}.abc"]
    for name in stale + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    with atomic_path(str(tmp_path / "export"), directory=True) as tmp:
        (open(os.path.join(tmp, "config.json"), "w")).write("{}")
    assert sorted(os.listdir(tmp_path)) == sorted(["export", *kept])
