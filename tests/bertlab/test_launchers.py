"""Launchers: ``bertlab ablate --jobs 2`` gives the sequential table; ``--launcher slurm`` (submitit's local
executor standing in for SLURM) skips finished runs, lists a failed one with its log and still reports."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from bertlab.launchers import Job, run_job, run_local, thread_env
from tests.bertlab.cli_helpers import ROOT, run_cli


def _ablation(tmp_path, tiny_bert_dir, tiny_csvs, root: str, arms=None) -> str:
    spec = {
        "name": "tiny",
        "root": root,
        "base": os.path.join(ROOT, "tests/configs/tiny_test.yaml"),
        "args": {
            "model.init_args.model_name_or_path": tiny_bert_dir,
            "data.init_args.splits.train_file": tiny_csvs["train"],
            "data.init_args.splits.val_file": tiny_csvs["val"],
            "data.init_args.splits.test_file": tiny_csvs["test"],
            "data.init_args.cache_dir": str(tmp_path / "cache"),
            "trainer.max_epochs": 2,
        },
        "seeds": [0],
        "arms": arms or [{"name": "base"}, {"name": "mean", "args": {"model.init_args.head": "MeanHead"}}],
    }
    path = tmp_path / f"{os.path.basename(root)}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _table(root: str) -> list[str]:
    with open(os.path.join(root, "results.md")) as f:
        return [line for line in f if line.startswith("|")]


def _runs(root: str) -> dict:
    with open(os.path.join(root, "results.json")) as f:
        return {arm: per["_runs"] for arm, per in json.load(f).items() if not arm.startswith("_")}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, tiny_bert_dir, tiny_csvs):
    tmp = tmp_path_factory.mktemp("ablate")
    root = str(tmp / "sequential")
    proc = run_cli("ablate", _ablation(tmp, tiny_bert_dir, tiny_csvs, root))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {"tmp": tmp, "root": root}


def test_sequential_run_saves_predictions_and_a_csv(sequential):
    root, runs = sequential["root"], _runs(sequential["root"])
    for arm in ("base", "mean"):
        preds = dict(np.load(os.path.join(root, arm, "seed0", "run", "test_predictions.npz")))
        assert len(preds["idx"]) == 40  # the tiny test split, each example once
        assert (preds["preds"] == preds["labels"]).mean() == pytest.approx(runs[arm]["0"]["test/acc"])
    csv = pd.read_csv(os.path.join(root, "results.csv"))
    assert csv[["arm", "seed"]].values.tolist() == [["base", 0], ["mean", 0]]
    assert csv["test/acc"].tolist() == [runs["base"]["0"]["test/acc"], runs["mean"]["0"]["test/acc"]]
    assert "(s0: " in _table(root)[-1].split(" | ")[-1]  # McNemar from the saved predictions, pooled and per seed


def test_local_jobs_2_gives_the_sequential_table(sequential, tiny_bert_dir, tiny_csvs):
    tmp = sequential["tmp"]
    root = str(tmp / "parallel")
    proc = run_cli("ablate", _ablation(tmp, tiny_bert_dir, tiny_csvs, root), "--jobs", "2", "--threads", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "2 runs, 2 at a time, 1 thread(s) each" in proc.stdout
    assert _table(root) == _table(sequential["root"])
    same = lambda runs: {
        a: {s: {k: v for k, v in r.items() if k != "provenance"} for s, r in p.items()} for a, p in runs.items()
    }
    assert same(_runs(root)) == same(_runs(sequential["root"]))  # the provenance differs in its command only
    log = os.path.join(root, "mean", "seed0", "ablate.log")
    assert "test/acc" in open(log).read()  # the run's output went to its log


def test_slurm_launcher_skips_finished_runs_and_lists_failures(sequential, tiny_bert_dir, tiny_csvs, monkeypatch):
    tmp = sequential["tmp"]
    root = str(tmp / "slurm")
    shutil.copytree(sequential["root"], root)
    export = os.path.join(root, "base", "seed0", "run", "export", "model.safetensors")
    before = os.stat(export).st_mtime_ns
    failing = "tests.bertlab.grad_sync_probe.FailAtFitStart"  # passes the pre-flight, fails once it runs
    arms = [{"name": "base"}, {"name": "broken", "args": ["--trainer.callbacks+", failing]}]
    path = _ablation(tmp, tiny_bert_dir, tiny_csvs, root, arms)
    monkeypatch.setenv("BERTLAB_SUBMITIT_CLUSTER", "local")
    proc = run_cli("ablate", path, "--launcher", "slurm", "--time", "5")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("bertlab: error: 1 run(s) failed, the table above leaves them out: broken/seed0 (")
    log = error.rsplit("log: ", 1)[1].rstrip(")")
    assert log.startswith(os.path.join(root, "slurm")) and "deliberate failure at fit start" in open(log).read()
    assert os.stat(export).st_mtime_ns == before  # finished: its stages were skipped
    assert "base/seed0: finished, skipped" in proc.stdout and "base/seed0: submitted" not in proc.stdout
    assert "broken/seed0: submitted job" in proc.stdout
    assert _table(root)[2:] == _table(sequential["root"])[2:3]  # base alone: broken has no row


def test_run_job_sets_and_restores_the_environment(tmp_path):
    job = Job("a/seed0", os.getenv, ("WANDB_JOB_TYPE",), str(tmp_path / "a.log"), {"WANDB_JOB_TYPE": "mean"})
    before = dict(os.environ)
    assert run_job(job, os.getcwd(), thread_env(3)) == "mean"
    assert run_job(Job("b", os.getenv, ("OMP_NUM_THREADS",), "", {}), os.getcwd(), thread_env(3)) == "3"
    assert dict(os.environ) == before


def test_local_workers_report_failures_with_their_logs(tmp_path):
    jobs = [Job(f"j{i}", int, (arg,), str(tmp_path / f"j{i}.log")) for i, arg in enumerate(["7", "seven"])]
    failures = run_local(jobs, n_jobs=2, threads=2)
    assert [(f.name, f.log) for f in failures] == [("j1", str(tmp_path / "j1.log"))]
    assert failures[0].error == "invalid literal for int() with base 10: 'seven'"
    assert "Traceback" in (tmp_path / "j1.log").read_text()  # the whole story is in the log
    assert sorted(os.listdir(tmp_path)) == ["j0.log", "j1.log"]  # the pickled jobs are gone


def test_slurm_jobs_ask_for_the_resources_given(tmp_path, monkeypatch):
    from bertlab.launchers import Slurm, slurm_executor

    srun = tmp_path / "bin" / "srun"  # submitit only builds a SLURM executor where it finds srun
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")

    executor = slurm_executor(str(tmp_path), Slurm(partition="gpu", gpus=2, cpus=8, time_min=90, mem_gb=32))
    executor.update_parameters(name="base-seed0")
    script = executor._executor._make_submission_file_text("python -m x", "uid")  # the sbatch file submitit writes
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--time=90", "--mem=32GB"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --job-name=base-seed0\n" in script and "#SBATCH --nodes=1\n" in script


def test_slurm_launcher_needs_slurm(tmp_path, monkeypatch):
    from bertlab.core.errors import BertlabError
    from bertlab.launchers import Slurm, run_slurm

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("BERTLAB_SUBMITIT_CLUSTER", raising=False)
    with pytest.raises(BertlabError, match="no `sbatch`/`srun` on this machine"):
        run_slurm([], str(tmp_path), Slurm())
    from bertlab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["ablate", os.path.join(ROOT, "configs/ablations/fine_food_seeds.yaml"), "--launcher", "slurm"]) == 2
    assert os.listdir(tmp_path) == []  # refused before any run directory was made


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--jobs", "0"], "--jobs and --threads must be at least 1, got 0 and None"),
        (
            ["--launcher", "slurm", "--jobs", "2"],
            "--jobs and --threads are for --launcher local; on SLURM every run is a job with --cpus",
        ),
    ],
)
def test_launcher_options_are_checked(argv, message, capsys):
    from bertlab.cli import main

    assert main(["ablate", os.path.join(ROOT, "configs/ablations/fine_food_seeds.yaml"), *argv]) == 2
    assert capsys.readouterr().err == f"bertlab: error: {message}\n"


def test_each_export_card_carries_its_arm_and_interval(sequential):
    root, runs = sequential["root"], _runs(sequential["root"])
    text = open(os.path.join(root, "mean", "seed0", "run", "export", "README.md"), encoding="utf-8").read()
    card = yaml.safe_load(text[4 : text.index("\n---\n", 4)])["bertlab"]["ablation"]
    acc = {arm: runs[arm]["0"]["test/acc"] for arm in ("base", "mean")}
    assert (card["table"], card["arm"], card["seed"], card["baseline"], card["seeds"]) == ("tiny", "mean", 0, "base", 1)
    assert card["mean"] == pytest.approx(acc["mean"], abs=1e-6)
    assert card["difference"]["mean"] == pytest.approx(acc["mean"] - acc["base"], abs=1e-6)
    assert card["difference"]["verdict"].startswith("too few seeds (1 unit") and card["difference"]["low"] is None
    assert "## In its ablation" in text and "one of those seeds" in text
    base = open(os.path.join(root, "base", "seed0", "run", "export", "README.md"), encoding="utf-8").read()
    assert "This arm is the table's baseline." in base
