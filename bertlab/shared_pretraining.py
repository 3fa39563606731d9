"""Pre-training shared inside an ablation: ``pretrain_seed``, ``pretrain`` groups and ``from_milestone``.

With ``pretrain_seeds: [P1, P2, ...]``, a pipeline arm's stages before the last (further pre-training,
Model_0, scoring) run once per pre-training seed, under ``ROOT/GROUP/pretrain_seedP``, and only the last
stage (the fine-tune) runs per fine-tune seed, from the export of its pre-training seed. The fine-tune
seeds are split in order into equal groups, one per pre-training seed (``seeds: [0..8]`` with three
pre-training seeds: 0-2 fine-tune from the first, 3-5 from the second, 6-8 from the third), so every run
has its own fine-tune seed and an arm without pre-training, run on the same seeds, pairs run for run.
Both sources of variance then enter the interval (``bertlab.stats.paired_interval`` on the nested
table: the pre-training run is the unit). ``pretrain_seed: S`` is the one-seed form (``ROOT/GROUP/pretrain``):
the seeds then measure fine-tuning variance around one pre-trained model only.

``GROUP`` is the arm's name unless the arm says ``pretrain: GROUP``: arms of one group (same pipeline,
same arguments) share one pre-training run. With ``from_milestone: N`` an arm fine-tunes from the
``StepBudget`` milestone export ``step-N`` of that run instead of its final export, so one MLM run
gives a whole curve of downstream score against pre-training steps, read off checkpoints of one run
as Sun et al. (2019, §5.4) read theirs. (A milestone of a longer run is not a shorter run: its learning
rate has not decayed yet.)
"""

from __future__ import annotations

import json
import os

from bertlab.ablation_spec import Ablation, Arm, split_shared
from bertlab.pipeline_spec import STAGE_FILE, Stage, export_dir, stage_dir


def pretrain_seed_of(spec: Ablation, seed: int) -> int | None:
    """The pre-training seed whose export fine-tune seed ``seed`` starts from (its group of ``seeds``)."""
    pseeds = spec.pretraining_seeds
    if not pseeds:
        return None
    seeds = list(spec.seeds)
    per = max(1, len(seeds) // len(pseeds))
    index = seeds.index(seed) if seed in seeds else 0
    return pseeds[min(index // per, len(pseeds) - 1)]


def pretrain_root(spec: Ablation, arm: Arm, pretrain_seed: int) -> str:
    if spec.pretrain_seeds:
        return os.path.join(spec.root, arm.group, f"pretrain_seed{pretrain_seed}")
    return os.path.join(spec.root, arm.group, "pretrain")


def shared_pretraining(spec: Ablation, arm: Arm, stages: list[Stage] | None = None, pretrain_seed: int | None = None):
    """Under ``pretrain_seeds``, a pipeline arm's (stages before the last, the last, their shared root for
    ``pretrain_seed`` (default: the first), their arguments); None when the arm shares nothing."""
    pseeds = spec.pretraining_seeds
    if not pseeds or not arm.pipeline:
        return None
    seed = pseeds[0] if pretrain_seed is None else pretrain_seed
    split = split_shared(arm, stages or arm.stages(), arm.pipeline)
    if split is None:
        return None
    pre, last = split
    pre_extra = ["--seed_everything", str(seed), "--wandb.group", spec.name]
    pre_extra += ["--wandb.tags", json.dumps([arm.group, f"pretrain_seed{seed}"])]
    return pre, last, pretrain_root(spec, arm, seed), spec.args + arm.args + pre_extra


def fine_tune_source(arm: Arm, pre: list[Stage], shared_root: str) -> str:
    """The directory the arm's fine-tune starts from: the shared run's export, or its milestone ``step-N``."""
    if arm.from_milestone is None:
        return export_dir(shared_root, pre[-1].name)
    return os.path.join(stage_dir(shared_root, pre[-1].name), "milestones", f"step-{arm.from_milestone}")


def fine_tune_stale(root: str, last: Stage, shared_root: str, pre: list[Stage]) -> bool:
    """The seed's fine-tune finished before its shared pre-training last ran, so it started from an export that
    has since been replaced. Its own fingerprint names the export's path, not the export, so it would look
    unchanged; the files' times tell (as ``make`` does)."""
    mine = os.path.join(stage_dir(root, last.name), STAGE_FILE)
    theirs = os.path.join(stage_dir(shared_root, pre[-1].name), STAGE_FILE) if pre else ""
    return os.path.isfile(mine) and os.path.isfile(theirs) and os.path.getmtime(mine) < os.path.getmtime(theirs)
