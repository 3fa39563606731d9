"""``FileArray``: slices and items equal to the saved array's, for either ``.npy`` header version; the file is never
mapped into the process; a copy for another process (pickle, fork) opens its own descriptor; bad slices and
a truncated file raise."""

import os
import pickle

import numpy as np
import pytest

from datamodules.file_array import FileArray


def _mapped(path: str) -> bool:
    return any(line.rstrip().endswith(os.path.abspath(path)) for line in open("/proc/self/maps"))


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.float32])
def test_slices_equal_the_saved_array_and_nothing_is_mapped(tmp_path, dtype):
    values = np.random.default_rng(0).integers(-100, 100, size=10_007).astype(dtype)
    path = str(tmp_path / "a.npy")
    np.save(path, values)
    a = FileArray(path)
    assert (len(a), a.dtype) == (10_007, np.dtype(dtype))
    for lo, hi in [(0, 1), (5, 4100), (10_000, 10_007), (3, 3), (9_990, 20_000), (-7, None)]:
        np.testing.assert_array_equal(a[lo:hi], values[lo:hi])
    assert a[3:3].dtype == np.dtype(dtype)
    assert [a[i] for i in (0, 4100, 10_006, -1, np.int64(7))] == [values[i] for i in (0, 4100, 10_006, -1, 7)]
    np.testing.assert_array_equal(np.asarray(a), values)
    assert np.asarray(a, dtype=np.float64).dtype == np.float64 and np.array_equal(a, values)
    assert not _mapped(path)


def test_version_2_header(tmp_path):
    values = np.arange(50, dtype=np.int32)
    path = str(tmp_path / "v2.npy")
    with open(path, "wb") as f:
        np.lib.format.write_array(f, values, version=(2, 0))
    np.testing.assert_array_equal(FileArray(path)[10:20], values[10:20])


def test_a_pickled_or_forked_copy_reads_with_its_own_descriptor(tmp_path):
    path = str(tmp_path / "a.npy")
    np.save(path, np.arange(100, dtype=np.int32))
    a = FileArray(path)
    assert a[0:2].tolist() == [0, 1]  # opens a descriptor here
    copy = pickle.loads(pickle.dumps(a))
    assert copy._fd is None and copy[98:100].tolist() == [98, 99]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh descriptor, not the parent's
        ok = a[50:52].tolist() == [50, 51] and a._fd is not None and a._pid == os.getpid()
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert a[4:5].tolist() == [4]


def test_bad_slices_and_a_truncated_file_raise(tmp_path):
    path = str(tmp_path / "a.npy")
    np.save(path, np.arange(100, dtype=np.int32))
    a = FileArray(path)
    with pytest.raises(TypeError, match="takes slices and integers"):
        a[[3]]
    with pytest.raises(IndexError, match="out of range"):
        a[100]
    with pytest.raises(ValueError, match="contiguous"):
        a[0:10:2]
    os.truncate(path, os.path.getsize(path) - 40)  # the last 10 values gone
    with pytest.raises(OSError, match="ended 40 bytes early"):
        a[0:100]
    np.save(str(tmp_path / "m.npy"), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="is 1-D"):
        FileArray(str(tmp_path / "m.npy"))
