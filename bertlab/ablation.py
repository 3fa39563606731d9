"""Ablations over seeds: ``bertlab ablate configs/ablations/NAME.yaml [--arms a,b] [--seeds 0,1,2]``.

Every arm runs with every seed under the same training budget (the ablation's common ``args``),
each run fit + test on the best validation checkpoint. An arm is a config delta layered over the
``base`` configs, optionally with its own ``args``, or a whole ``pipeline`` (multi-stage recipes
such as task-adaptive pre-training or self-distillation), whose last stage is scored.

Results go to ``ROOT/results.json`` and, through ``bertlab.ablation_report``, ``ROOT/results.md`` (mean ±
std over seeds, the baseline beside every arm, paired statistics, the command that reproduces the table),
``ROOT/results.csv`` (one row per run) and ``ROOT/results.png``; with ``from_milestone`` arms also
``ROOT/curve.json`` and ``ROOT/curve.png`` (``bertlab.curve_report``).

With ``pretrain_seeds: [P, ...]``, a pipeline arm's stages before the last (further pre-training, Model_0,
scoring) run once per pre-training seed, under ``ROOT/ARM/pretrain_seedP`` (shared by a ``pretrain`` group
of arms, and read at a ``from_milestone``: ``bertlab.shared_pretraining``), and the fine-tune seeds are
nested under them, so the table's interval counts pre-training runs as its units. The shared stages run
before any of the arm's seeds start, so parallel runs never race to run them.

Every run's record carries its provenance (``bertlab.core.provenance``). A table is built from runs of one
training code: runs whose code differs from the code running now are refused (``--rerun-stale`` runs them
again, ``--allow-mixed`` builds the table anyway and shows each run's commit).

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

from bertlab.ablation_cards import annotate_cards
from bertlab.ablation_report import table_meta, write_report
from bertlab.ablation_spec import Ablation, Arm, load_ablation, parse_seeds
from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path, file_lock
from bertlab.core.provenance import code_hash
from bertlab.curve_report import write_curve
from bertlab.help import ABLATE_EXAMPLES
from bertlab.launchers import Failure, Job, add_launcher_args, launcher_from_args, run_local
from bertlab.pipeline import preflight_stages, run_stages
from bertlab.pipeline_spec import Stage
from bertlab.shared_pretraining import (
    fine_tune_source,
    fine_tune_stale,
    pretrain_root,
    pretrain_seed_of,
    shared_pretraining,
)
from bertlab.stats import MIN_UNITS


def _seed_args(spec: Ablation, arm: Arm, seed: int) -> list[str]:
    return ["--seed_everything", str(seed), "--wandb.group", spec.name] + [
        "--wandb.tags",
        json.dumps([arm.name, f"seed{seed}"]),
    ]


def _single_stage(spec: Ablation, arm: Arm) -> Stage:
    return Stage(name="run", config=spec.base + arm.config, args=spec.args + arm.args, init_from="none", test=True)


def _preflight(spec: Ablation, arm: Arm) -> None:
    """The CLI's pre-flight check on every stage of an arm (its first seed), before any arm trains."""
    seed = spec.seeds[0]
    root, extra = os.path.join(spec.root, arm.name, f"seed{seed}"), _seed_args(spec, arm, seed)
    if arm.pipeline:
        preflight_stages(arm.stages(), root, spec.args + arm.args + extra)
    else:
        preflight_stages([_single_stage(spec, arm)], root, extra)


def _run_arm(spec: Ablation, arm: Arm, seed: int, check_only: bool = False, force: bool = False) -> dict | None:
    """The run's test metrics; with ``check_only``, None unless every stage of it has finished unchanged."""
    root = os.path.join(spec.root, arm.name, f"seed{seed}")
    extra = _seed_args(spec, arm, seed)
    pre_record: dict = {}
    if arm.pipeline:
        stages = arm.stages()
        pseed = pretrain_seed_of(spec, seed)
        shared = shared_pretraining(spec, arm, stages, pseed)
        if shared is not None:
            pre_summary = run_pretraining(spec, arm, pseed, check_only=True)
            if pre_summary is None:
                if check_only:
                    return None
                pre_summary = run_pretraining(spec, arm, pseed)
            pre, last, shared_root, _ = shared
            source = fine_tune_source(arm, pre, shared_root)
            if arm.from_milestone is not None and not os.path.isdir(source):
                if check_only:
                    return None
                raise BertlabError(f"arm {arm.name}: the shared pre-training finished without milestone {source!r}")
            extra_last = ["--model.init_args.model_name_or_path", source]
            stages = [dataclasses.replace(last, init_from="none", args=last.args + extra_last)]
            if fine_tune_stale(root, last, shared_root, pre):
                if check_only:
                    return None
                print(f"[bertlab ablate] {arm.name}/seed{seed}: its shared pre-training ran again; re-running")
                force = True
            pre_record = {"pretrain_seed": pseed, "pretrain_provenance": _stage_provenance(pre_summary)}
            fit = ((pre_summary or {}).get("stages") or [{}])[-1].get("metrics", {}).get("fit", {})
            pre_record["pretrain_metrics"] = {k: v for k, v in fit.items() if k != "provenance"}
        summary = run_stages(
            stages,
            root,
            arm.pipeline,
            force=force,
            extra_args=spec.args + arm.args + extra,
            check_only=check_only,
        )
    else:
        stage = _single_stage(spec, arm)
        summary = run_stages([stage], root, arm.name, force=force, extra_args=extra, check_only=check_only)
    if summary is None:
        return None
    last = summary["stages"][-1]["metrics"]
    val = {k: v for k, v in last.get("fit", {}).items() if k.startswith("val/")}  # for choices made on validation
    return {**last.get("test", {}), "fit": val, **pre_record}


def _stage_provenance(summary: dict | None) -> list[dict]:
    """The provenance of each shared pre-training stage's fit (what trained the model the fine-tune starts from)."""
    return [
        s["metrics"]["fit"]["provenance"]
        for s in (summary or {}).get("stages", [])
        if "provenance" in (s.get("metrics") or {}).get("fit", {})
    ]


def run_pretraining(
    spec: Ablation, arm: Arm, pretrain_seed: int | None = None, check_only: bool = False, force: bool = False
) -> dict | None:
    """Run an arm's shared stages once for ``pretrain_seed`` (under ROOT/GROUP/pretrain_seedP; skipped when done).
    With ``check_only``, run nothing: None unless they have all finished unchanged."""
    pre, _, shared_root, args = shared_pretraining(spec, arm, pretrain_seed=pretrain_seed)
    return run_stages(pre, shared_root, arm.pipeline, force=force, extra_args=args, check_only=check_only)


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


def run_one(spec: Ablation, arm: Arm, seed: int, force: bool = False) -> dict:
    """One arm × seed, recorded in ``results.json``: what a launcher runs, here or on a cluster node."""
    test = _run_arm(spec, arm, seed, force=force)
    _record(os.path.join(spec.root, "results.json"), arm.name, seed, test, spec.metrics)
    return test


def codes(test: dict | None) -> set[str]:
    """The training-code hashes behind one run: its fine-tune's and its shared pre-training's."""
    test = test or {}
    found = {(test.get("provenance") or {}).get("code")}
    found |= {p.get("code") for p in test.get("pretrain_provenance") or []}
    return found


def seed_warnings(spec: Ablation, arms: list[Arm]) -> list[str]:
    """Arms whose verdict will read "too few seeds": fewer than ``MIN_UNITS`` units (fine-tune seeds, or
    pre-training seeds for an arm pre-trained under several)."""
    out = []
    for arm in arms:
        nested = arm.pipeline and len(spec.pretraining_seeds) > 1
        units = len(spec.pretraining_seeds) if nested else len(spec.seeds)
        if units < MIN_UNITS:
            what = "pre-training seeds" if nested else "seeds"
            out.append(
                f"arm {arm.name} has {units} {what}; an interval needs {MIN_UNITS} to give a verdict "
                "(the table prints the smallest difference it could detect)"
            )
    return out


def _log(spec: Ablation, arm: Arm, part: str) -> str:
    return os.path.join(spec.root, arm.name, part, "ablate.log")


def _wandb(arm: Arm) -> dict[str, str]:
    """W&B: group = the ablation (``--wandb.group``), tags = arm and seed (``--wandb.tags``), job type = the arm.
    An environment variable, not an argument: arguments are part of a stage's fingerprint, and finished runs
    must stay finished."""
    return {"WANDB_JOB_TYPE": arm.name}


def run_ablation(
    path: str,
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    launch: Callable[[list[Job], str], list[Failure]] = lambda jobs, root: run_local(jobs),
    allow_mixed: bool = False,
    rerun_stale: bool = False,
) -> tuple[str, list[Failure]]:
    """Run every chosen arm × seed through ``launch``; the report covers every run that has finished."""
    spec = load_ablation(path)
    if seeds and len(spec.pretraining_seeds) > 1:  # nested: a subset of the file's seeds, nested as in the file
        outside = [s for s in seeds if s not in spec.seeds]
        if outside:
            raise BertlabError(
                f"--seeds {outside}: not among {path}'s seeds {spec.seeds}, which nest under pretrain_seeds "
                f"{spec.pretraining_seeds}; --seeds picks among them (add more to the file to run more)"
            )
    elif seeds:
        spec.seeds = seeds
    run_seeds = seeds or spec.seeds
    chosen = [a for a in spec.arms if not arms or a.name in arms]
    unknown = set(arms or []) - {a.name for a in spec.arms}
    if unknown:
        raise BertlabError(f"{path}: no arm(s) {sorted(unknown)}; arms: {[a.name for a in spec.arms]}")
    for arm in chosen:  # every arm's every stage, before the first one trains
        _preflight(spec, arm)
    for line in seed_warnings(spec, chosen):
        print(f"[bertlab ablate] warning: {line}", flush=True)
    os.makedirs(spec.root, exist_ok=True)
    # each run directory is locked by the run writing it (run_stages): two `bertlab ablate --arms` processes may
    # share a root, and one that reaches a directory the other is writing stops there with a clear error
    failures = _launch_all(spec, chosen, run_seeds, launch, allow_mixed, rerun_stale)
    results = _record(os.path.join(spec.root, "results.json"), None, None, None, spec.metrics)
    order = [a.name for a in spec.arms if a.name in results]
    mixed = sorted({c or "unrecorded" for a in order for t in results[a].get("_runs", {}).values() for c in codes(t)})
    if len(mixed) > 1 and not allow_mixed:
        raise BertlabError(
            f"{spec.root}/results.json holds runs of {len(mixed)} different training codes ({', '.join(mixed)}); "
            "one table is one code: rerun with --rerun-stale, or --allow-mixed to show each run's commit"
        )
    if any(a.from_milestone is not None for a in spec.arms):
        write_curve(spec, results)
    command = f"bertlab ablate {path}"
    report = write_report(spec, {a: results[a] for a in order}, command)
    annotate_cards(spec.root, table_meta(spec, command), {a: results[a] for a in order})
    return report, failures


def _launch_all(spec, chosen, seeds, launch, allow_mixed, rerun_stale) -> list[Failure]:
    """The shared pre-training jobs first (each group × pre-training seed that ``seeds`` nest under, once, so that
    the seeds' runs never race to run them), then every arm × seed that has not finished on this training code."""
    current = code_hash()
    shared, groups, stale = [], set(), []
    needed = {pretrain_seed_of(spec, seed) for seed in seeds}
    for arm in chosen:
        for pseed in [p for p in spec.pretraining_seeds if p in needed] if arm.pipeline else []:
            if shared_pretraining(spec, arm) is None or (arm.group, pseed) in groups:
                continue
            groups.add((arm.group, pseed))
            done = run_pretraining(spec, arm, pseed, check_only=True)
            old = done is not None and {p.get("code") for p in _stage_provenance(done)} != {current}
            if old and not rerun_stale and not allow_mixed:
                stale.append(f"{arm.group}/pretrain_seed{pseed}")
            if done is None or (old and rerun_stale):
                log = os.path.join(pretrain_root(spec, arm, pseed), "ablate.log")
                job_args = (spec, arm, pseed, False, old and rerun_stale)
                shared.append(Job(f"{arm.group}/pretrain_seed{pseed}", run_pretraining, job_args, log, _wandb(arm)))
    store, jobs, finished_runs = os.path.join(spec.root, "results.json"), [], []
    for arm in chosen:
        for seed in seeds:
            name = f"{arm.name}/seed{seed}"
            finished = _run_arm(spec, arm, seed, check_only=True)
            old = finished is not None and codes(finished) != {current}
            if old and not rerun_stale and not allow_mixed:
                stale.append(name)
            if finished is not None and not (old and rerun_stale):
                finished_runs.append((arm, seed, finished))
                continue
            jobs.append(Job(name, run_one, (spec, arm, seed, bool(old)), _log(spec, arm, f"seed{seed}"), _wandb(arm)))
    if stale and (jobs or shared or len({c for *_, t in finished_runs for c in codes(t)}) > 1):
        raise BertlabError(
            f"{len(stale)} finished run(s) of this table ran on other training code than this checkout ({current}), "
            f"e.g. {', '.join(stale[:4])}; one table is one code: --rerun-stale runs them again, --allow-mixed "
            "keeps them (the table then shows each run's commit)"
        )
    for arm, seed, finished in finished_runs:  # no job, not even a short one on a cluster
        print(f"[bertlab ablate] {arm.name}/seed{seed}: finished, skipped", flush=True)
        _record(store, arm.name, seed, finished, spec.metrics)
    failures = launch(shared, spec.root) if shared else []
    failed = {f.name.split("/")[0] for f in failures}
    jobs = [j for j in jobs if not any(a.name == j.name.split("/")[0] and a.group in failed for a in chosen)]
    return failures + (launch(jobs, spec.root) if jobs else [])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bertlab ablate",
        description="Run every arm of an ablation with every seed; report mean ± std and paired statistics.",
        epilog=ABLATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ablation", help="ablation YAML (configs/ablations/NAME.yaml)")
    parser.add_argument("--arms", help="comma-separated subset of arms")
    parser.add_argument("--seeds", help="fine-tune seeds: 0,1,2 or a range 0-4 (default: the file's)")
    parser.add_argument("--allow-mixed", action="store_true", help="build the table from runs of different code")
    parser.add_argument("--rerun-stale", action="store_true", help="run again the runs made by other training code")
    add_launcher_args(parser)
    ns = parser.parse_args(argv)
    text, failures = run_ablation(
        ns.ablation,
        ns.arms.split(",") if ns.arms else None,
        parse_seeds(ns.seeds, "--seeds") if ns.seeds else None,
        launcher_from_args(ns),
        allow_mixed=ns.allow_mixed,
        rerun_stale=ns.rerun_stale,
    )
    print(text)
    if failures:
        listed = "; ".join(f"{f.name} ({f.error}; log: {f.log})" for f in failures)
        raise BertlabError(f"{len(failures)} run(s) failed, the table above leaves them out: {listed}")
    return 0
