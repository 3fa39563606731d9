"""What an unfinished attempt at a pipeline stage left in its folder: a checkpoint to resume from, or debris.

A ``fit`` stage that was stopped part-way (SIGKILL, a lost machine, a scheduler's time limit, Ctrl-C, a crash)
resumes from the latest checkpoint its attempt wrote, when that attempt ran the same stage on the same code
(``attempt.json`` holds the stage's fingerprint and ``provenance.code_hash``) and the checkpoint loads; a forced
rerun (``--force``, an ablation's stale or ``--rerun-stale`` runs) never resumes. Lightning restores the weights,
the optimiser, the loops and the callbacks, and bertlab the random streams (``callbacks/rng_state.py``), so on
CPU the stage ends as an uninterrupted one would. Any other attempt's leftovers are removed and the stage runs
from its start.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.provenance import code_hash
from bertlab.pipeline_spec import read_json

ATTEMPT_FILE = "attempt.json"


def checkpoints(out: str) -> list[str]:
    """Every Lightning checkpoint in the stage folder ``out`` (its export excluded)."""
    export = os.path.join(out, "export") + os.sep
    found = glob.glob(os.path.join(glob.escape(out), "**", "*.ckpt"), recursive=True)
    return sorted(p for p in found if not p.startswith(export) and os.path.isfile(p))


def resume_point(out: str, fingerprint: str, stage: str) -> str | None:
    """The checkpoint with the most optimiser steps that an attempt at this very stage, on this very code, wrote,
    or None. One that does not load (cut short by a full disk or a copy across file systems) is named and passed
    over."""
    attempt, found = read_json(os.path.join(out, ATTEMPT_FILE)), checkpoints(out)
    if not attempt or not found:
        return None
    if attempt.get("fingerprint") != fingerprint:
        print(f"[bertlab pipeline] {stage}: its checkpoints are of another config; running it from its start")
        return None
    if attempt.get("code") != code_hash():
        print(f"[bertlab pipeline] {stage}: its checkpoints are of other bertlab code; running it from its start")
        return None
    from bertlab.core.hf_loading import check_checkpoint  # torch: only where a checkpoint is there to read

    best, best_key = None, None
    for path in found:
        try:
            step = int(check_checkpoint(path, "checkpoint").get("global_step", -1))
        except BertlabError as e:
            print(f"[bertlab pipeline] {stage}: not resuming from it: {e}", flush=True)
            continue
        key = (step, os.path.getmtime(path))
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


def clear(out: str) -> None:
    """Remove what an earlier attempt at a stage left in its folder ``out`` (checkpoints, logs, its config, metrics
    and record) before the stage runs again from its start, keeping the export, which the new run replaces
    atomically at its end. Lightning's ``ModelCheckpoint`` would otherwise write ``-v1`` names beside the old
    checkpoints, and the folder would mix two runs."""
    if not os.path.isdir(out):
        return
    for entry in os.scandir(out):
        if entry.name == "export":
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def begin(out: str, fingerprint: str) -> None:
    """Record that an attempt at the stage with ``fingerprint`` is under way in ``out``."""
    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, ATTEMPT_FILE)) as tmp, open(tmp, "w") as f:
        json.dump({"fingerprint": fingerprint, "code": code_hash()}, f)


def refused(out: str) -> None:
    """After a stage failed: an attempt that wrote no checkpoint leaves no record, and no folder when nothing
    else is in it (a stage refused at its start leaves nothing behind)."""
    if checkpoints(out):
        return
    marker = os.path.join(out, ATTEMPT_FILE)
    if os.path.exists(marker):
        os.remove(marker)
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
