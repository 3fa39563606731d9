"""A full disk (ENOSPC) while an export or a token-cache entry is written: one ``bertlab: error:`` line naming the
path, no temporary left, and the previous good export (or no cache entry at all) in place, so the next run works.

Where this process may mount a small tmpfs (root), the disk really fills; everywhere, the same cases run with an
``OSError(ENOSPC)`` injected at the write call."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid

import numpy as np
import pytest
from safetensors.torch import load_file

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from datamodules.token_cache import cached_arrays
from tests.bertlab.cli_helpers import tiny_args
from tests.bertlab.test_preflight import run_main
from tests.bertlab.test_save_config import tree


def _build(n: int = 40_000):
    """Token rows of about ``8 n`` bytes on disk."""
    ids = [list(range(2, 2 + 16))] * n
    return ids, None


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, or a skip where this process may not mount one."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("no tmpfs mount here (not root); the injected ENOSPC cases cover the same code")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _no_temporaries(folder) -> None:
    assert [p for p in tree(folder) if os.path.basename(p).startswith(".")] == []


def test_a_cache_entry_that_fills_the_disk_is_not_left_half_written(small_disk):
    cache = str(small_disk / "cache")
    with pytest.raises(BertlabError, match="the disk is full .* nothing was written. Free some space"):
        cached_arrays(cache, "k1", lambda: _build(40_000))  # ~2.5 MB of tokens on a 1 MiB disk
    assert not os.path.exists(os.path.join(cache, "tokens", "k1"))
    _no_temporaries(small_disk)
    arrays, built = cached_arrays(cache, "k1", lambda: _build(100))  # space again: the entry builds
    assert built and len(arrays) == 100


def test_a_file_that_fills_the_disk_leaves_the_previous_one(small_disk):
    target = small_disk / "probs.npy"
    np.save(target, np.arange(10))
    with pytest.raises(BertlabError, match=f"{target}: the disk is full .* the previous probs.npy is unchanged"):
        with atomic_path(str(target)) as tmp:
            np.save(tmp, np.zeros(400_000))  # 3.2 MB
    assert np.load(target).tolist() == list(range(10))
    _no_temporaries(small_disk)


@pytest.mark.parametrize("where", ["token cache", "export"])
def test_an_injected_enospc_is_one_error_line_and_keeps_the_good_state(
    where, tiny_bert_dir, tiny_csvs, tmp_path, monkeypatch
):
    """A fit whose export (or whose token cache) meets a full disk: exit 2, one line naming the path; the export
    of the earlier run is byte for byte what it was, the cache holds no entry that was cut short."""
    root = tmp_path / "run"
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(tmp_path / "cache"))
    args += ["--trainer.max_steps", "3", "--trainer.callbacks", "[]", "--export.use_best", "false"]
    if where == "export":
        assert run_main("fit", *args).returncode == 0
    before = tree(root / "export") if where == "export" else None

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "export":
        import transformers.modeling_utils

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)  # save_pretrained's weights
    else:
        import datamodules.token_cache

        monkeypatch.setattr(datamodules.token_cache, "_raw_to_npy", full)
    proc = run_main("fit", *args, "--seed_everything", "1", "--data.cache_dir", str(tmp_path / "cache2"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("bertlab: error: "), proc.stderr[-2000:]
    assert "the disk is full" in lines[-1] and sum(x.startswith("bertlab: error") for x in lines) == 1
    if where == "export":
        assert f"{root / 'export'}: the disk is full" in lines[-1] and "previous export is unchanged" in lines[-1]
        assert tree(root / "export") == before
        info = json.loads((root / "export" / "bertlab_export.json").read_text())
        assert info and load_file(str(root / "export" / "model.safetensors"))
        _no_temporaries(root)
    else:
        assert str(tmp_path / "cache2" / "tokens") in lines[-1] and "nothing was written" in lines[-1]
        assert os.listdir(tmp_path / "cache2" / "tokens") == []
