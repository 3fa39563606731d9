"""``BERTLAB_ALLOCATOR``: which library the command re-executes itself with, the errors, and what a run
started as a command really allocates with (read from its mapped libraries, as the run's log says)."""

from __future__ import annotations

import os

import pytest

from bertlab import allocator
from bertlab.allocator import AllocatorError, find_tcmalloc, preload_environment, to_preload
from tests.bertlab.cli_helpers import QUIET, run_cli, tiny_args


@pytest.fixture
def lib_dir(tmp_path):
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    return [str(tmp_path)]


def test_auto_preloads_tcmalloc_where_it_is_installed(lib_dir, tmp_path_factory):
    empty = [str(tmp_path_factory.mktemp("empty"))]
    assert to_preload({}, lib_dir) == os.path.join(lib_dir[0], "libtcmalloc_minimal.so.4")
    assert to_preload({"BERTLAB_ALLOCATOR": "tcmalloc"}, lib_dir) == to_preload({}, lib_dir)
    assert to_preload({}, empty) is None  # glibc's malloc; the run's log says how to install tcmalloc


def test_nothing_to_do_when_chosen_off_already_preloaded_or_tried(lib_dir):
    assert to_preload({"BERTLAB_ALLOCATOR": "system"}, lib_dir) is None
    assert to_preload({"LD_PRELOAD": "/opt/libtcmalloc.so.4"}, lib_dir) is None
    assert to_preload({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, lib_dir) is None  # the user's own choice
    assert to_preload({allocator._TRIED: "1"}, lib_dir) is None  # a preload that failed is not retried forever


def test_the_preloaded_environment_keeps_the_users_preloads_and_settings(lib_dir, monkeypatch):
    monkeypatch.setattr(allocator, "library_dirs", lambda: lib_dir)
    user = {"LD_PRELOAD": "/opt/libfoo.so", "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "42", "X": "1"}
    env = preload_environment(user)
    assert env["LD_PRELOAD"] == os.path.join(lib_dir[0], "libtcmalloc_minimal.so.4") + " /opt/libfoo.so"
    assert (env[allocator._TRIED], env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"], env["X"]) == ("1", "42", "1")
    assert preload_environment({"BERTLAB_ALLOCATOR": "system"}) is None


def test_bad_choices_are_refused(tmp_path):
    with pytest.raises(AllocatorError, match="must be one of auto, tcmalloc, system, not 'jemallocc'"):
        to_preload({"BERTLAB_ALLOCATOR": "jemallocc"}, [str(tmp_path)])
    with pytest.raises(AllocatorError, match="tcmalloc is not installed \\(apt-get install libtcmalloc-minimal4\\)"):
        to_preload({"BERTLAB_ALLOCATOR": "tcmalloc"}, [str(tmp_path)])


def test_the_minimal_library_is_preferred(tmp_path):
    (tmp_path / "libtcmalloc.so.4").write_bytes(b"")
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert find_tcmalloc([str(tmp_path)]).endswith("libtcmalloc_minimal.so.4")


def test_a_run_started_as_a_command_allocates_with_what_it_logs(tiny_bert_dir, tiny_csvs, tmp_path, monkeypatch):
    args = [*tiny_args(tiny_bert_dir, tiny_csvs, str(tmp_path), str(tmp_path / "cache")), "--trainer.fast_dev_run", "1"]
    proc = run_cli("fit", *args, *QUIET)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    if find_tcmalloc():  # CI installs it (.ci/run)
        assert "bertlab: allocator tcmalloc_minimal (" in out, out[-2000:]
    else:
        assert "bertlab: allocator glibc malloc (tcmalloc not installed: apt-get install" in out, out[-2000:]
    monkeypatch.setenv("BERTLAB_ALLOCATOR", "system")
    proc = run_cli("fit", *args, *QUIET)
    assert (
        proc.returncode == 0
        and "bertlab: allocator glibc malloc (BERTLAB_ALLOCATOR=system)" in proc.stdout + proc.stderr
    )


def test_a_bad_choice_stops_the_command_with_one_line(monkeypatch):
    monkeypatch.setenv("BERTLAB_ALLOCATOR", "tcmallocc")
    proc = run_cli("fit", "--print_config")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "bertlab: error: BERTLAB_ALLOCATOR must be one of auto, tcmalloc, system, not 'tcmallocc'"
    ]
