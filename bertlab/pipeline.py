"""Multi-stage pipelines: ``bertlab pipeline configs/pipelines/NAME.yaml [--root DIR] [--set STAGE.KEY=VALUE]
[--skip STAGE]``.

A pipeline is a list of named stages under one root directory. Each stage is one run in its
own process — a LightningCLI run (``fit`` and optionally ``test``) or a built-in step such as
``init_model`` — and hands over one ``save_pretrained`` directory, ``ROOT/STAGE/export``.
By default stage N+1 starts from stage N's export (``--model.init_args.model_name_or_path``);
``init_from: none`` keeps the model of the stage's own config, ``init_from: NAME`` names a stage.

Arguments may use ``{root}``, ``{prev}`` (previous export), ``{export:NAME}`` / ``{dir:NAME}`` and
``{ckpt:NAME}`` (the best checkpoint behind stage NAME's export, e.g. for a ``predict`` stage).

A stage may be ``{include: configs/pipelines/stages/NAME.yaml}``: a stage defined once and shared by
several pipelines; keys beside ``include`` override the file's.

Re-runs: a finished stage is skipped when its export exists and its fingerprint — its config
files' contents, its arguments and the fingerprints of all stages before it — is unchanged.
So a changed stage re-runs together with every stage after it. A ``fit`` stage that an earlier attempt left
part-way resumes from that attempt's latest checkpoint (``bertlab.stage_attempt``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bertlab import stage_attempt
from bertlab.core.errors import BertlabError
from bertlab.core.faults import fault_point, in_stage
from bertlab.core.files import atomic_path, exclusive_dir, held_locks
from bertlab.core.fingerprint import fingerprint
from bertlab.core.lifetime import child_env
from bertlab.pipeline_spec import (
    STAGE_FILE,
    Stage,
    apply_overrides,
    check_stages,
    export_dir,
    fill,
    load_pipeline,
    parse_overrides,
    read_json,
    skip_stages,
    stage_dir,
)
from bertlab.pipeline_summary import write_summary


def _fingerprint(stage: Stage, args: list[str], upstream: str) -> str:
    contents = []
    for cfg in stage.config:
        with open(cfg, "rb") as f:
            contents.append(f.read())
    return fingerprint(upstream, json.dumps([stage.kind, stage.subcommand, stage.test, args]), *contents, sep="")


def _run(cmd: list[str], where: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, env=child_env(env), pass_fds=held_locks())  # it dies with us, and holds our lock
    if proc.returncode != 0:
        raise BertlabError(f"stage {where} failed with exit code {proc.returncode}: {' '.join(cmd)}")


def run_stage(stage: Stage, root: str, args: list[str], fingerprint: str, fresh: bool = False) -> dict:
    """Run one stage in its own process; a ``fit`` that an earlier attempt left part-way resumes from its latest
    checkpoint (``bertlab.stage_attempt``), unless ``fresh``."""
    out = stage_dir(root, stage.name)
    resumable = stage.kind == "lightning" and stage.subcommand == "fit" and not fresh
    resume = stage_attempt.resume_point(out, fingerprint, stage.name) if resumable else None
    if resume is None:
        stage_attempt.clear(out)
    else:
        print(f"[bertlab pipeline] {stage.name}: resuming from {resume}", flush=True)
    stage_attempt.begin(out, fingerprint)
    try:
        return _run_stage_process(stage, root, args, out, ["--ckpt_path", resume] if resume else [])
    except BertlabError:
        stage_attempt.refused(out)
        raise


def _run_stage_process(stage: Stage, root: str, args: list[str], out: str, resume: list[str]) -> dict:
    if stage.kind == "init_model":
        _run([sys.executable, "-m", "bertlab.scratch", "--out", export_dir(root, stage.name), *args], stage.name)
        return {}
    base = [sys.executable, "-m", "bertlab.cli", *stage_command(stage, root, args)]
    _run(base + resume, stage.name)
    metrics = {"fit": read_json(os.path.join(out, "fit_metrics.json"))}
    if stage.test:
        info = read_json(os.path.join(export_dir(root, stage.name), "bertlab_export.json"))
        if not info.get("checkpoint"):
            raise BertlabError(
                f"stage {stage.name}: `test: true` needs a ModelCheckpoint in its config (the export names no "
                "checkpoint)"
            )
        test = [sys.executable, "-m", "bertlab.cli", "test"] + base[4:] + ["--ckpt_path", info["checkpoint"]]
        _run(test, f"{stage.name} (test)")
        metrics["test"] = read_json(os.path.join(out, "test_metrics.json"))
    return metrics


def run_pipeline(
    path: str,
    root: str | None = None,
    force: bool = False,
    extra_args: list[str] | None = None,
    overrides: dict[str, list[str]] | None = None,
    skip: list[str] | None = None,
) -> dict:
    """Run the pipeline in ``path`` but the stages in ``skip``, with ``overrides`` (``parse_overrides``). A
    shortened pipeline runs under ``ROOT_without_STAGE_...`` unless given a root: the full pipeline's later
    stages and its summary stay as they are."""
    default_root, stages = load_pipeline(path)
    stages = skip_stages(apply_overrides(stages, overrides or {}, "--set"), skip or [], "--skip", overrides)
    if skip and not root:
        root = f"{default_root}_without_{'_'.join(skip)}"
    return run_stages(stages, root or default_root, path, force, extra_args)


def stage_args(
    stage: Stage, root: str, prev: str | None, names: list[str], extra_args: list[str] | None, dry: bool = False
) -> list[str]:
    """A stage's arguments with placeholders filled and the model it starts from; ``dry``: before any stage ran."""
    # run-wide arguments (a seed, an ablation's budget) first: a stage's own arguments win over them
    args = (list(extra_args or []) if stage.kind == "lightning" else []) + [
        fill(a, root, prev, names, dry) for a in stage.args
    ]
    source = (
        prev
        if stage.init_from == "previous"
        else None
        if stage.init_from == "none"
        else export_dir(root, stage.init_from)
    )
    if source is not None and stage.kind == "lightning":
        if not os.path.isdir(source) and not dry:
            raise BertlabError(
                f"stage {stage.name}: the export it starts from, {source!r}, is missing; run the stages before it"
            )
        args = ["--model.init_args.model_name_or_path", source] + args
    return args


def preflight_stages(stages: list[Stage], root: str, extra_args: list[str] | None = None) -> None:
    """The CLI's pre-flight check on every LightningCLI stage, before the first one runs (what earlier stages
    will write under ``root`` is taken on trust)."""
    from bertlab.engine import preflight_stage

    names, prev = [s.name for s in stages], None
    for stage in stages:
        if stage.kind == "lightning":
            cmd = stage_command(stage, root, stage_args(stage, root, prev, names, extra_args, dry=True))
            preflight_stage(cmd, pending=(root,))
        prev = export_dir(root, stage.name)


def stage_command(stage: Stage, root: str, args: list[str]) -> list[str]:
    """The ``bertlab`` arguments that run ``stage``."""
    cmd = [stage.subcommand] + [a for cfg in stage.config for a in ("--config", cfg)] + args
    return cmd + [
        "--trainer.default_root_dir",
        stage_dir(root, stage.name),
        "--export.dirpath",
        export_dir(root, stage.name),
    ]


def run_stages(
    stages: list[Stage],
    root: str,
    label: str,
    force: bool = False,
    extra_args: list[str] | None = None,
    check_only: bool = False,
) -> dict | None:
    """Run ``stages`` under ``root``; ``extra_args`` go to every LightningCLI stage (e.g. a seed).

    ``check_only``: run nothing (and so check nothing beyond the wiring); None when a stage would run, else the
    summary of the finished stages.
    """
    check_stages(stages)
    if check_only:
        return _run_stages(stages, root, label, force, extra_args, check_only)
    preflight_stages(stages, root, extra_args)
    with exclusive_dir(root):
        return _run_stages(stages, root, label, force, extra_args, check_only)


def _run_stages(stages, root, label, force, extra_args, check_only) -> dict | None:
    names = [s.name for s in stages]
    summary = {"pipeline": label, "root": root, "stages": []}
    upstream, prev = "", None
    for stage in stages:
        args = stage_args(stage, root, prev, names, extra_args)
        fp = _fingerprint(stage, args, upstream)
        record_path = os.path.join(stage_dir(root, stage.name), STAGE_FILE)
        record = read_json(record_path)
        exports = stage.kind == "init_model" or stage.subcommand == "fit"
        done = record.get("fingerprint") == fp and (not exports or os.path.isdir(export_dir(root, stage.name)))
        t0 = time.time()
        if done and not force:
            status, metrics = "skipped (unchanged)", record.get("metrics", {})
            if not check_only:
                print(f"[bertlab pipeline] {stage.name}: unchanged, skipped", flush=True)
        elif check_only:
            return None
        else:
            print(f"[bertlab pipeline] {stage.name}: running", flush=True)
            with in_stage(stage.name):
                metrics = run_stage(stage, root, args, fp, fresh=force)
                fault_point("stage_record")
            status = "ran"
            with atomic_path(record_path) as tmp, open(tmp, "w") as f:
                json.dump(
                    {
                        "fingerprint": fp,
                        "args": args,
                        "config": stage.config,
                        "metrics": metrics,
                        "seconds": round(time.time() - t0, 1),
                    },
                    f,
                    indent=1,
                )
        summary["stages"].append(
            {
                "name": stage.name,
                "kind": stage.kind,
                "status": status,
                "export": export_dir(root, stage.name),
                "metrics": metrics,
                "seconds": record.get("seconds") if status != "ran" else round(time.time() - t0, 1),
            }
        )
        upstream, prev = fp, export_dir(root, stage.name)
    write_summary(root, summary)
    return summary


def main(argv: list[str]) -> int:
    from bertlab.help import PIPELINE_EXAMPLES

    parser = argparse.ArgumentParser(
        prog="bertlab pipeline",
        description="Run a multi-stage pipeline.",
        epilog=PIPELINE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pipeline", help="pipeline YAML (configs/pipelines/NAME.yaml)")
    parser.add_argument("--root", help="output root (default: the pipeline's `root`, else runs/NAME)")
    parser.add_argument("--force", action="store_true", help="re-run every stage")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override one stage's argument, e.g. finetune.trainer.max_epochs=1 (repeatable)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="STAGE",
        help="leave a stage out (repeatable); the stage after it starts from the last one run",
    )
    ns = parser.parse_args(argv)
    skip = [name for item in ns.skip for name in item.split(",") if name]
    summary = run_pipeline(ns.pipeline, ns.root, ns.force, overrides=parse_overrides(ns.set), skip=skip)
    with open(os.path.join(summary["root"], "summary.md")) as f:
        print(f.read())
    return 0
