"""One arm × seed of an ablation: its stages (the arm's fine-tune alone, or its pipeline, whose stages before
the last are the shared pre-training of its pre-training seed), run under ``ROOT/ARM/seedS`` and recorded in
``ROOT/results.json``. ``run_one`` is what a launcher runs, here or on a cluster node; ``bertlab.ablation``
decides which runs are due."""

from __future__ import annotations

import dataclasses
import json
import os

from bertlab.ablation_spec import Ablation, Arm
from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path, file_lock
from bertlab.pipeline import preflight_stages, run_stages
from bertlab.pipeline_spec import Stage
from bertlab.shared_pretraining import (
    fine_tune_source,
    fine_tune_stale,
    pretrain_seed_of,
    shared_pretraining,
)


def seed_args(spec: Ablation, arm: Arm, seed: int) -> list[str]:
    return ["--seed_everything", str(seed), "--wandb.group", spec.name] + [
        "--wandb.tags",
        json.dumps([arm.name, f"seed{seed}"]),
    ]


def single_stage(spec: Ablation, arm: Arm) -> Stage:
    return Stage(name="run", config=spec.base + arm.config, args=spec.args + arm.args, init_from="none", test=True)


def preflight_arm(spec: Ablation, arm: Arm) -> None:
    """The CLI's pre-flight check on every stage of an arm (its first seed), before any arm trains."""
    seed = spec.seeds[0]
    root, extra = os.path.join(spec.root, arm.name, f"seed{seed}"), seed_args(spec, arm, seed)
    if arm.pipeline:
        preflight_stages(arm.stages(), root, spec.args + arm.args + extra)
    else:
        preflight_stages([single_stage(spec, arm)], root, extra)


def run_arm(spec: Ablation, arm: Arm, seed: int, check_only: bool = False, force: bool = False) -> dict | None:
    """The run's test metrics; with ``check_only``, None unless every stage of it has finished unchanged."""
    root = os.path.join(spec.root, arm.name, f"seed{seed}")
    extra = seed_args(spec, arm, seed)
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
            pre_record = {"pretrain_seed": pseed, "pretrain_provenance": stage_provenance(pre_summary)}
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
        stage = single_stage(spec, arm)
        summary = run_stages([stage], root, arm.name, force=force, extra_args=extra, check_only=check_only)
    if summary is None:
        return None
    last = summary["stages"][-1]["metrics"]
    val = {k: v for k, v in last.get("fit", {}).items() if k.startswith("val/")}  # for choices made on validation
    return {**last.get("test", {}), "fit": val, **pre_record}


def stage_provenance(summary: dict | None) -> list[dict]:
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


def record(store: str, arm: str | None, seed: int | None, test: dict | None, metrics: list[str]) -> dict:
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
    test = run_arm(spec, arm, seed, force=force)
    record(os.path.join(spec.root, "results.json"), arm.name, seed, test, spec.metrics)
    return test


def codes(test: dict | None) -> set[str]:
    """The training-code hashes behind one run: its fine-tune's and its shared pre-training's."""
    test = test or {}
    found = {(test.get("provenance") or {}).get("code")}
    found |= {p.get("code") for p in test.get("pretrain_provenance") or []}
    return found
