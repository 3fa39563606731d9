"""Ablations over seeds: ``bertlab ablate configs/ablations/NAME.yaml [--arms a,b] [--seeds 0,1,2]``.

Every arm runs with every seed under the same training budget (the ablation's common ``args``),
each run fit + test on the best validation checkpoint. An arm is a config delta layered over the
``base`` configs, optionally with its own ``args``, or a whole ``pipeline`` (multi-stage recipes
such as task-adaptive pre-training or self-distillation), whose last stage is scored.

Results go to ``ROOT/results.json`` and, through ``bertlab.ablation_report``, ``ROOT/results.md`` (mean ±
std over seeds, the baseline beside every arm, paired statistics, the command that reproduces the table),
``ROOT/results.csv`` (one row per run) and ``ROOT/results.png``; with ``from_milestone`` arms also
``ROOT/curve.json`` and ``ROOT/curve.png`` (``bertlab.curve_report``).

With ``pretrain_seed: S``, a pipeline arm's stages before the last (further pre-training, Model_0,
scoring) run once, with seed S, under ``ROOT/ARM/pretrain`` (shared by a ``pretrain`` group of arms, and
read at a ``from_milestone``: ``bertlab.shared_pretraining``), and only the last stage (the fine-tune)
runs per seed, from that export: the seeds then measure fine-tuning variance around one pre-trained
model per arm, as Gururangan et al. (2020) report theirs, at a fraction of the compute. The shared
stages run before any of the arm's seeds start, so parallel runs never race to run them.

Runs are grouped in W&B by the ablation's name, with the arm as job type, and tagged by arm and seed.
Finished runs are skipped on re-run, so an interrupted ablation resumes. Where the runs execute
(here one by one, here N at a time, or one SLURM job each) is ``bertlab.launchers``' business.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable

from bertlab.ablation_report import write_report
from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path, file_lock
from bertlab.core.yaml_files import read_yaml
from bertlab.curve_report import write_curve
from bertlab.help import ABLATE_EXAMPLES
from bertlab.launchers import Failure, Job, add_launcher_args, launcher_from_args, run_local
from bertlab.pipeline import preflight_stages, run_stages
from bertlab.pipeline_spec import Stage, as_args, check_stages, load_pipeline
from bertlab.shared_pretraining import check_groups, fine_tune_source, fine_tune_stale, group, shared_pretraining

ARM_KEYS = {"name", "config", "args", "pipeline", "note", "pretrain", "from_milestone", "baseline"}


def load_ablation(path: str) -> dict:
    spec = read_yaml(path, "ablation file") or {}
    if not isinstance(spec, dict):
        raise BertlabError(f"{path}: an ablation is a mapping with name, base, args, seeds, arms, ...")
    unknown = set(spec) - {"name", "root", "base", "args", "seeds", "metrics", "baseline", "arms", "pretrain_seed"}
    if unknown:
        raise BertlabError(f"{path}: unknown key(s) {sorted(unknown)}")
    spec.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    spec.setdefault("root", os.path.join("runs", "ablations", spec["name"]))
    spec.setdefault("seeds", [0, 1, 2])
    spec.setdefault("metrics", ["test/acc", "test/f1"])
    if spec.setdefault("pretrain_seed", None) is not None and not isinstance(spec["pretrain_seed"], int):
        raise BertlabError(f"{path}: pretrain_seed must be an integer seed, got {spec['pretrain_seed']!r}")
    spec["base"] = [spec["base"]] if isinstance(spec.get("base"), str) else list(spec.get("base") or [])
    spec["args"] = as_args(spec.get("args"), path)
    arms = spec.get("arms") or []
    if not arms:
        raise BertlabError(f"{path}: no arms")
    for arm in arms:
        bad = set(arm) - ARM_KEYS
        if bad or "name" not in arm:
            raise BertlabError(f"{path}: arm {arm.get('name', '?')!r}: needs a name; unknown key(s) {sorted(bad)}")
        arm["config"] = [arm["config"]] if isinstance(arm.get("config"), str) else list(arm.get("config") or [])
        arm["args"] = as_args(arm.get("args"), f"{path}: arm {arm['name']}")
        for cfg in spec["base"] + arm["config"]:
            if not os.path.isfile(cfg):
                raise BertlabError(f"{path}: arm {arm['name']}: config file {cfg!r} does not exist")
            read_yaml(cfg)
        if arm.get("pipeline"):
            check_stages(load_pipeline(arm["pipeline"])[1])  # now rather than after an hour of other arms
    spec.setdefault("baseline", arms[0]["name"])
    names = [a["name"] for a in arms]
    for arm in [spec] + arms:
        if arm.get("baseline") is not None and arm["baseline"] not in names:
            raise BertlabError(f"{path}: baseline {arm['baseline']!r} names no arm ({names})")
    for arm in arms:
        shared_pretraining(spec, arm)  # refuses, now, a pipeline whose last stage cannot be shared out
    check_groups(spec, path)
    return spec


def _seed_args(spec: dict, arm: dict, seed: int) -> list[str]:
    return ["--seed_everything", str(seed), "--wandb.group", spec["name"]] + [
        "--wandb.tags",
        json.dumps([arm["name"], f"seed{seed}"]),
    ]


def _single_stage(spec: dict, arm: dict) -> Stage:
    return Stage(
        name="run", config=spec["base"] + arm["config"], args=spec["args"] + arm["args"], init_from="none", test=True
    )


def _preflight(spec: dict, arm: dict) -> None:
    """The CLI's pre-flight check on every stage of an arm (its first seed), before any arm trains."""
    seed = spec["seeds"][0]
    root, extra = os.path.join(spec["root"], arm["name"], f"seed{seed}"), _seed_args(spec, arm, seed)
    if arm.get("pipeline"):
        preflight_stages(load_pipeline(arm["pipeline"])[1], root, spec["args"] + arm["args"] + extra)
    else:
        preflight_stages([_single_stage(spec, arm)], root, extra)


def _run_arm(spec: dict, arm: dict, seed: int, check_only: bool = False) -> dict | None:
    """The run's test metrics; with ``check_only``, None unless every stage of it has finished unchanged."""
    root = os.path.join(spec["root"], arm["name"], f"seed{seed}")
    extra = _seed_args(spec, arm, seed)
    force = False
    if arm.get("pipeline"):
        _, stages = load_pipeline(arm["pipeline"])
        shared = shared_pretraining(spec, arm, stages)
        if shared is not None:
            if run_pretraining(spec, arm, check_only) is None:
                return None
            pre, last, shared_root, _ = shared
            source = fine_tune_source(arm, pre, shared_root)
            if arm.get("from_milestone") is not None and not os.path.isdir(source):
                if check_only:
                    return None
                raise BertlabError(f"arm {arm['name']}: the shared pre-training finished without milestone {source!r}")
            extra_last = ["--model.init_args.model_name_or_path", source]
            stages = [dataclasses.replace(last, init_from="none", args=last.args + extra_last)]
            if fine_tune_stale(root, last, shared_root, pre):
                if check_only:
                    return None
                print(f"[bertlab ablate] {arm['name']}/seed{seed}: its shared pre-training ran again; re-running")
                force = True
        summary = run_stages(
            stages,
            root,
            arm["pipeline"],
            force=force,
            extra_args=spec["args"] + arm["args"] + extra,
            check_only=check_only,
        )
    else:
        summary = run_stages([_single_stage(spec, arm)], root, arm["name"], extra_args=extra, check_only=check_only)
    return None if summary is None else summary["stages"][-1]["metrics"].get("test", {})


def run_pretraining(spec: dict, arm: dict, check_only: bool = False) -> dict | None:
    """Run an arm's shared stages once (seed ``pretrain_seed``, under ROOT/GROUP/pretrain; skipped when done).
    With ``check_only``, run nothing: None unless they have all finished unchanged."""
    pre, _, shared_root, args = shared_pretraining(spec, arm)
    return run_stages(pre, shared_root, arm["pipeline"], extra_args=args, check_only=check_only)


def _record(store: str, arm: str | None, seed: int | None, test: dict | None, metrics: list[str]) -> dict:
    """Merge one run into ``results.json`` under a file lock (several ``bertlab ablate --arms`` may share it)."""
    with file_lock(store):
        results = json.load(open(store)) if os.path.isfile(store) else {}
        if arm is not None:
            per = results.setdefault(arm, {})
            runs = per.setdefault("_runs", {})
            runs[str(seed)] = test
            for m in metrics:
                per[m] = [runs[s][m] for s in sorted(runs, key=int) if m in runs[s]]
            with atomic_path(store) as tmp, open(tmp, "w") as f:
                json.dump(results, f, indent=1)
    return results


def run_one(spec: dict, arm: dict, seed: int) -> dict:
    """One arm × seed, recorded in ``results.json``: what a launcher runs, here or on a cluster node."""
    test = _run_arm(spec, arm, seed)
    _record(os.path.join(spec["root"], "results.json"), arm["name"], seed, test, spec["metrics"])
    return test


def _log(spec: dict, arm: dict, part: str) -> str:
    return os.path.join(spec["root"], arm["name"], part, "ablate.log")


def _wandb(arm: dict) -> dict[str, str]:
    """W&B: group = the ablation (``--wandb.group``), tags = arm and seed (``--wandb.tags``), job type = the arm.
    An environment variable, not an argument: arguments are part of a stage's fingerprint, and finished runs
    must stay finished."""
    return {"WANDB_JOB_TYPE": arm["name"]}


def run_ablation(
    path: str,
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    launch: Callable[[list[Job], str], list[Failure]] = lambda jobs, root: run_local(jobs),
) -> tuple[str, list[Failure]]:
    """Run every chosen arm × seed through ``launch``; the report covers every run that has finished."""
    spec = load_ablation(path)
    if seeds:
        spec["seeds"] = seeds
    chosen = [a for a in spec["arms"] if not arms or a["name"] in arms]
    unknown = set(arms or []) - {a["name"] for a in spec["arms"]}
    if unknown:
        raise BertlabError(f"{path}: no arm(s) {sorted(unknown)}; arms: {[a['name'] for a in spec['arms']]}")
    for arm in chosen:  # every arm's every stage, before the first one trains
        _preflight(spec, arm)
    os.makedirs(spec["root"], exist_ok=True)
    # pretrain_seed: each group's shared stages run first, once, so that the seeds' runs never race to run them
    shared, groups = [], {}
    for arm in chosen:
        if shared_pretraining(spec, arm) is None or group(arm) in groups:
            continue
        groups[group(arm)] = arm
        if run_pretraining(spec, arm, check_only=True) is None:
            log = os.path.join(spec["root"], group(arm), "pretrain", "ablate.log")
            shared.append(Job(f"{group(arm)}/pretrain", run_pretraining, (spec, arm), log, _wandb(arm)))
    failures = launch(shared, spec["root"]) if shared else []
    failed = {f.name for f in failures}
    chosen = [a for a in chosen if f"{group(a)}/pretrain" not in failed]
    store, jobs = os.path.join(spec["root"], "results.json"), []
    for arm in chosen:
        for seed in spec["seeds"]:
            name = f"{arm['name']}/seed{seed}"
            finished = _run_arm(spec, arm, seed, check_only=True)
            if finished is not None:  # no job, not even a short one on a cluster
                print(f"[bertlab ablate] {name}: finished, skipped", flush=True)
                _record(store, arm["name"], seed, finished, spec["metrics"])
                continue
            jobs.append(Job(name, run_one, (spec, arm, seed), _log(spec, arm, f"seed{seed}"), _wandb(arm)))
    failures += launch(jobs, spec["root"]) if jobs else []
    results = _record(store, None, None, None, spec["metrics"])
    order = [a["name"] for a in spec["arms"] if a["name"] in results]
    if any(a.get("from_milestone") is not None for a in spec["arms"]):
        write_curve(spec, results)
    return write_report(spec, {a: results[a] for a in order}, f"bertlab ablate {path}"), failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bertlab ablate",
        description="Run every arm of an ablation with every seed; report mean ± std and paired statistics.",
        epilog=ABLATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ablation", help="ablation YAML (configs/ablations/NAME.yaml)")
    parser.add_argument("--arms", help="comma-separated subset of arms")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the file's)")
    add_launcher_args(parser)
    ns = parser.parse_args(argv)
    text, failures = run_ablation(
        ns.ablation,
        ns.arms.split(",") if ns.arms else None,
        [int(s) for s in ns.seeds.split(",")] if ns.seeds else None,
        launcher_from_args(ns),
    )
    print(text)
    if failures:
        listed = "; ".join(f"{f.name} ({f.error}; log: {f.log})" for f in failures)
        raise BertlabError(f"{len(failures)} run(s) failed, the table above leaves them out: {listed}")
    return 0
