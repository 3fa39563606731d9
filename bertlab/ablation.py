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
Finished runs are skipped on re-run, so an interrupted ablation resumes, and a killed run resumes its fit from
its last checkpoint (``bertlab.stage_attempt``). One run is ``bertlab.ablation_run``. Where the runs execute
(here one by one, here N at a time, or one SLURM job each) is ``bertlab.launchers``' business.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from bertlab.ablation_cards import annotate_cards
from bertlab.ablation_report import table_meta, write_report
from bertlab.ablation_run import codes, preflight_arm, record, run_arm, run_one, run_pretraining, stage_provenance
from bertlab.ablation_spec import Ablation, Arm, load_ablation, parse_seeds
from bertlab.core.errors import BertlabError
from bertlab.core.provenance import code_hash
from bertlab.curve_report import write_curve
from bertlab.help import ABLATE_EXAMPLES
from bertlab.launchers import Failure, Job, add_launcher_args, launcher_from_args, run_local
from bertlab.shared_pretraining import (
    pretrain_root,
    pretrain_seed_of,
    shared_pretraining,
)
from bertlab.stats import MIN_UNITS


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
        preflight_arm(spec, arm)
    for line in seed_warnings(spec, chosen):
        print(f"[bertlab ablate] warning: {line}", flush=True)
    os.makedirs(spec.root, exist_ok=True)
    # each run directory is locked by the run writing it (run_stages): two `bertlab ablate --arms` processes may
    # share a root, and one that reaches a directory the other is writing stops there with a clear error
    failures = _launch_all(spec, chosen, run_seeds, launch, allow_mixed, rerun_stale)
    results = record(os.path.join(spec.root, "results.json"), None, None, None, spec.metrics)
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
            old = done is not None and {p.get("code") for p in stage_provenance(done)} != {current}
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
            finished = run_arm(spec, arm, seed, check_only=True)
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
        record(store, arm.name, seed, finished, spec.metrics)
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
