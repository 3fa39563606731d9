"""A 3-stage tiny pipeline (MLM -> fine-tune -> predict) killed with SIGKILL at 20 seeded moments, each kill
followed by a rerun of ``bertlab pipeline``: the run completes, and its final export's weights and its predictions
equal those of an uninterrupted run, with every cache entry whole and no debris left.

The moments: 16 visits of the named fault points (``bertlab.core.faults``: tokenizing, cache writes, training
steps, exports, predictions, stage records), drawn among the visits an uninterrupted run makes and counted within
their stage, and 4 kills from outside at seeded delays (two of the process group, two of the ``bertlab pipeline``
process alone). They run in two sequences side by side. In each, the site kills come one after another on one
root, each rerun killed at a later moment than the one before (so it first has to recover from the previous
kill); a rerun to the end is checked; then the outside kills run the same way on a fresh root, and a last rerun
is checked. The site moments must come (one miss is tolerated, see the test), every site among them, and
each kind of outside kill must land.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bertlab.core.faults import SITES
from tests.bertlab.cli_helpers import MLM_CONFIG, ROOT, cli_env
from tests.bertlab.run_locks import held, locked, until
from tests.conftest import make_texts

TINY_CONFIG = os.path.join(ROOT, "tests/configs/tiny_test.yaml")
QUIET = {
    "trainer.logger": False,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
    "trainer.precision": "32-true",
    "trainer.accelerator": "cpu",
}
SEED, SITE_KILLS, OUTSIDE_KILLS = 24, 16, 4
CHAINS = 2  # kill sequences run side by side; fixed, so that each meets the same moments everywhere


def _spec(tiny_bert_dir: str, data: dict) -> dict:
    ckpt = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint"}
    cache = {"data.init_args.cache_dir": "{root}/cache"}
    task = {"data.init_args.splits.train_file": data["train"], "data.init_args.splits.val_file": data["val"]}
    mlm = {
        "model.init_args.model_name_or_path": tiny_bert_dir,
        "data.init_args.task": None,
        "data.init_args.corpus": data["corpus"],  # two files: two shards, tokenized by two workers
        "data.init_args.max_length": 32,
        "data.init_args.loader.batch_size": 8,
        "trainer.max_steps": 6,
        "trainer.val_check_interval": 3,
        "trainer.callbacks": [ckpt | {"init_args": {"every_n_train_steps": 2, "save_top_k": 0, "save_last": True}}],
    }
    finetune = {"trainer.max_epochs": 2, "data.init_args.loader.batch_size": 8}
    predict = {"ckpt_path": "{ckpt:finetune}", "data.init_args.splits.predict_file": data["test"]}
    return {
        "name": "faults",
        "stages": [
            {"name": "mlm", "config": [MLM_CONFIG], "init_from": "none", "args": QUIET | cache | mlm},
            {"name": "finetune", "config": [TINY_CONFIG], "args": QUIET | cache | task | finetune},
            {
                "name": "predict",
                "subcommand": "predict",
                "config": [TINY_CONFIG],
                "args": QUIET | cache | task | predict,
            },
        ],
    }


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory, tiny_bert_dir) -> str:
    tmp = tmp_path_factory.mktemp("faults")
    data = {"corpus": []}
    for i in range(2):
        path = tmp / f"corpus{i}.txt"
        path.write_text("\n".join(make_texts(30, seed=10 + i)[0]) + "\n")
        data["corpus"].append(str(path))
    for split, n, seed in [("train", 32, 1), ("val", 16, 2), ("test", 16, 3)]:
        texts, labels = make_texts(n, seed)
        data[split] = str(tmp / f"{split}.csv")
        pd.DataFrame({"text": texts, "label": labels}).to_csv(data[split], index=False)
    path = tmp / "faults.yaml"
    path.write_text(yaml.safe_dump(_spec(tiny_bert_dir, data), sort_keys=False))
    return str(path)


def _start(pipeline: str, root: str, log: str, fault: str | None = None, visits: str | None = None, extra=()):
    """``bertlab pipeline`` in a session of its own: a fault point kills its whole process group, as a job dies."""
    env = {k: v for k, v in cli_env().items() if not k.startswith("BERTLAB_FAULT")}
    env |= ({"BERTLAB_FAULT": fault} if fault else {}) | ({"BERTLAB_FAULT_DIR": visits} if visits else {})
    cmd = [sys.executable, "-m", "bertlab", "pipeline", pipeline, "--root", root, *extra]
    with open(log, "w") as out:  # a file, not a pipe: nobody reads while the run goes on
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc: subprocess.Popen, log: str, timeout: float | None = 300) -> int | None:
    """The exit code (-9: killed), or None when ``timeout`` passed first."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if timeout is not None and timeout >= 300:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the run hung: {open(log).read()[-3000:]}") from None
        return None


def _weights(root: str, stage: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(root, stage, "export", "model.safetensors"))


def _tree(root: str) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(folder, n), root) + ("/" if n in dirs else "") for n in dirs + files]
    return sorted(out)


@pytest.fixture(scope="module")
def reference(pipeline_file, tmp_path_factory) -> dict:
    """The uninterrupted run: its outputs, the fault points it passes in order, and how long it takes."""
    tmp = tmp_path_factory.mktemp("reference")
    root, visits, log = str(tmp / "root"), str(tmp / "visits"), str(tmp / "log")
    t0 = time.monotonic()
    proc = _start(pipeline_file, root, log, visits=visits)
    assert _wait(proc, log) == 0, open(log).read()[-3000:]
    with open(os.path.join(visits, "visits")) as f:
        order = f.read().split()
    return {"root": root, "visits": order, "seconds": time.monotonic() - t0}


def _moments(order: list[str], rng: random.Random) -> list[tuple[str, int]]:
    """``SITE_KILLS`` visits of the reference run as (STAGE/SITE, n): one of each site, the others at random, in
    the order the run meets them. n counts within the stage, which a rerun starts again from its start."""
    positions = {rng.choice([i for i, s in enumerate(order) if s.rpartition("/")[2] == site]) for site in SITES}
    rest = [i for i in range(len(order)) if i not in positions]
    positions |= set(rng.sample(rest, SITE_KILLS - len(positions)))
    return [(order[i], order[: i + 1].count(order[i])) for i in sorted(positions)]


def assert_as_if_never_killed(root: str, reference: dict) -> None:
    """The same exports (every tensor), predictions and cache entries as the reference, and nothing else."""
    ref = reference["root"]
    for stage in ("mlm", "finetune"):
        mine, theirs = _weights(root, stage), _weights(ref, stage)
        assert mine.keys() == theirs.keys(), stage
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), f"{stage}: other weights"
    with (
        open(os.path.join(root, "predict", "predictions.csv"), "rb") as a,
        open(os.path.join(ref, "predict", "predictions.csv"), "rb") as b,
    ):
        assert a.read() == b.read(), "other predictions"
    for meta in glob.glob(os.path.join(ref, "cache", "tokens", "*", "meta.json")):
        entry = os.path.relpath(os.path.dirname(meta), ref)
        with open(os.path.join(root, entry, "meta.json")) as f:
            assert json.load(f)["key"] == os.path.basename(entry)
        for array in glob.glob(os.path.join(ref, entry, "**", "*.npy"), recursive=True):
            mine = np.load(os.path.join(root, os.path.relpath(array, ref)))
            assert np.array_equal(mine, np.load(array)), f"cache entry {array} differs"
    debris = [
        p for p in _tree(root) if re.search(r"(^|/)\.[^/]+\.[^/.\-]+-\d+\.|\.partial$|\.build/?$|-v\d+\.ckpt$", p)
    ]
    assert not debris, debris
    empty = [p for p in _tree(root) if p.endswith("/") and not os.listdir(os.path.join(root, p))]
    assert not empty, f"empty folders: {empty}"
    locks = glob.glob(os.path.join(root, "**", "*.lock"), recursive=True) + [os.path.join(root, ".bertlab.lock")]
    assert not [lock for lock in locks if held(lock)], "a lock is still held"
    assert os.path.getsize(os.path.join(root, ".bertlab.lock")) == 0  # no holder recorded
    assert _tree(root) == _tree(ref)


def _run_to_end(pipeline: str, root: str, log: str, reference: dict) -> None:
    assert _wait(_start(pipeline, root, log), log) == 0, open(log).read()[-3000:]
    assert_as_if_never_killed(root, reference)


def _chain(pipeline: str, work: str, sites: list, outside: list, reference: dict) -> list[tuple]:
    """Kill at ``sites`` one after another on one root, each run the rerun of the run killed before it; rerun to
    the end and check; then, on a fresh root, kill from ``outside`` the same way, and rerun to the end and check.
    A site moment counts within its stage, which the rerun starts again, so each comes; an outside kill's run
    that finishes before its delay is checked, and the root started afresh. Returns what happened."""
    root, events = os.path.join(work, "root"), []
    os.makedirs(work)
    for k, (kind, moment) in enumerate(sites + outside):
        log = os.path.join(work, f"run{k}.log")
        if k == len(sites):
            _run_to_end(pipeline, root, os.path.join(work, "sites.log"), reference)
            shutil.rmtree(root)
        t0 = time.monotonic()
        if kind == "site":
            fault = f"{moment[0]}:{moment[1]}"
            code = _wait(_start(pipeline, root, log, fault=fault, visits=os.path.join(work, f"visits{k}")), log)
        else:
            proc = _start(pipeline, root, log)
            code = _wait(proc, log, timeout=moment)
            if code is None:
                (os.killpg if kind == "group" else os.kill)(proc.pid, signal.SIGKILL)
                code = _wait(proc, log)
                assert _released(root), "a stage outlived its pipeline, or its lock did"  # then the rerun may start
        resumed = "resuming from" in open(log).read()  # a fit stage the kill before left part-way
        events.append((kind, moment, code, round(time.monotonic() - t0, 1), resumed))
        assert code in (0, -signal.SIGKILL), f"{kind} {moment}: exit code {code}\n{open(log).read()[-3000:]}"
        if code == 0:  # the moment never came in this rerun: it finished, and must be whole
            assert_as_if_never_killed(root, reference)
            shutil.rmtree(root)
    _run_to_end(pipeline, root, os.path.join(work, "last.log"), reference)
    return events


@pytest.mark.slow
def test_a_pipeline_killed_at_20_moments_finishes_as_if_never_killed(pipeline_file, reference, tmp_path):
    rng = random.Random(SEED)
    sites = [("site", m) for m in _moments(reference["visits"], rng)]
    delays = sorted(rng.uniform(0.3, 0.9) * reference["seconds"] for _ in range(OUTSIDE_KILLS))
    outside = [("group" if i % 2 else "pid", d) for i, d in enumerate(delays)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(CHAINS) as pool:
        work = [str(tmp_path / f"chain{i}") for i in range(CHAINS)]
        runs = [
            pool.submit(_chain, pipeline_file, w, sites[i::CHAINS], outside[i::CHAINS], reference)
            for i, w in enumerate(work)
        ]
        events = [e for r in runs for e in r.result()]
    print(f"\nreference {reference['seconds']:.0f} s; kills {time.monotonic() - t0:.0f} s:", *events, sep="\n")
    # a site moment comes again in the rerun unless two tokenizing workers raced at the kill (one may finish a shard
    # the rerun then skips): it has not happened here, and one such miss is tolerated; every site must be hit
    missed = [m for kind, m, code, *_ in events if kind == "site" and code != -signal.SIGKILL]
    assert len(missed) <= 1, f"site moments that never came: {missed}"
    fired = {m[0].rpartition("/")[2] for kind, m, code, *_ in events if kind == "site" and code == -signal.SIGKILL}
    assert fired == set(SITES), f"the fault points never reached: {set(SITES) - fired}"
    outside_kinds = {kind for kind, _, code, *_ in events if kind != "site" and code == -signal.SIGKILL}
    assert outside_kinds == {"pid", "group"}, f"outside kills that never landed: {events}"
    assert sum(e[-1] for e in events) >= 2, f"no rerun resumed a fit from its checkpoint: {events}"


@pytest.mark.slow
def test_a_killed_fit_stage_resumes_from_its_last_checkpoint(pipeline_file, reference, tmp_path):
    """Killed after its 5th step, the MLM stage (a checkpoint every 2 steps, logged as users log) resumes at step 4
    on the rerun, in the same log version: it trains steps 5 and 6 only, and ends with the uninterrupted weights."""
    root, log, logged = str(tmp_path / "root"), str(tmp_path / "log"), ["--set", "mlm.trainer.logger=true"]
    code = _wait(_start(pipeline_file, root, log, fault="mlm/train_step:5", extra=logged), log)
    assert code == -signal.SIGKILL, open(log).read()[-3000:]
    visits = str(tmp_path / "visits")
    assert _wait(_start(pipeline_file, root, log, visits=visits, extra=logged), log) == 0, open(log).read()[-3000:]
    assert re.search(r"mlm: resuming from \S+/mlm/csv/version_0/checkpoints/last\.ckpt", open(log).read())
    with open(os.path.join(visits, "visits")) as f:
        assert f.read().split().count("mlm/train_step") == 2
    assert os.listdir(os.path.join(root, "mlm", "csv")) == ["version_0"]
    mine, theirs = _weights(root, "mlm"), _weights(reference["root"], "mlm")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)


def _fit_record(root: str, stage: str) -> dict:
    with open(os.path.join(root, stage, "stage.json")) as f:
        return {k: v for k, v in json.load(f)["metrics"]["fit"].items() if k != "provenance"}


@pytest.mark.slow
def test_a_fit_resumed_at_its_end_keeps_its_record(pipeline_file, reference, tmp_path):
    """Killed while exporting, the MLM stage resumes from its step-6 checkpoint with nothing left to train (so no
    training hook runs): the record its attempt wrote as training ended stands. Had the kill also come before that
    record, the stage validates again for it: the same validation metrics, and no training ones."""
    root, log = str(tmp_path / "root"), str(tmp_path / "log")
    assert _wait(_start(pipeline_file, root, log, fault="mlm/export:1"), log) == -signal.SIGKILL
    assert _wait(_start(pipeline_file, root, log), log) == 0, open(log).read()[-3000:]
    assert "mlm: resuming from" in open(log).read()
    assert _fit_record(root, "mlm") == _fit_record(reference["root"], "mlm")
    assert_as_if_never_killed(root, reference)
    for name in ("stage.json", "fit_metrics.json"):  # as if killed before the record was written
        os.remove(os.path.join(root, "mlm", name))
    assert _wait(_start(pipeline_file, root, log), log) == 0, open(log).read()[-3000:]
    assert "validating for it" in open(log).read()
    ref = _fit_record(reference["root"], "mlm")
    assert _fit_record(root, "mlm") == {k: v for k, v in ref.items() if k.startswith("val/")}


def _processes_in(root: str) -> list[int]:
    """The pids of the processes whose command line names ``root`` (a stage, its tokenizing workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if entry.isdigit() and root.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def _released(root: str, seconds: float = 10) -> bool:
    """Whether, within ``seconds``, every process naming ``root`` has gone and the root's lock is free. (A dying
    process keeps its files, and so the lock it shares, a moment after its command line has gone.)"""
    return until(lambda: not _processes_in(root) and not locked(root), seconds)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_stage_dies_with_its_pipeline_and_frees_its_lock(pipeline_file, tmp_path):
    """``kill -9`` of the ``bertlab pipeline`` process alone: the stage it started, which would otherwise train on
    for minutes, dies with it, and with it the last hold on the root's lock."""
    root, visits, log = str(tmp_path / "root"), str(tmp_path / "visits"), str(tmp_path / "log")
    proc = _start(pipeline_file, root, log, visits=visits, extra=["--set", "mlm.trainer.max_steps=100000"])
    deadline = time.monotonic() + 240
    while "train_step" not in (open(os.path.join(visits, "visits")).read() if os.path.isdir(visits) else ""):
        assert proc.poll() is None and time.monotonic() < deadline, open(log).read()[-3000:]
        time.sleep(0.2)
    assert _processes_in(root), "the stage is not running"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    try:
        assert _released(root), "the stage outlived its pipeline, or its lock did"
    finally:
        for pid in _processes_in(root):
            os.kill(pid, signal.SIGKILL)
