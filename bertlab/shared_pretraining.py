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

The checks that these make sense (``check_nesting``, ``split_shared``, ``check_groups``) run when
``bertlab.ablation_spec`` loads the file, before anything trains.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

import yaml

from bertlab.core.errors import BertlabError
from bertlab.core.yaml_files import read_yaml
from bertlab.pipeline_spec import STAGE_FILE, Stage, export_dir, stage_dir

if TYPE_CHECKING:  # bertlab.ablation_spec runs the checks below when a file loads
    from bertlab.ablation_types import Ablation, Arm


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


def check_nesting(spec: Ablation, path: str) -> None:
    """``pretrain_seed`` or ``pretrain_seeds``, and ``pretrain_seeds`` split ``seeds`` into equal groups."""
    if spec.pretrain_seeds is not None and spec.pretrain_seed is not None:
        raise BertlabError(f"{path}: give pretrain_seeds or pretrain_seed, not both")
    pseeds = spec.pretraining_seeds
    if len(pseeds) > 1 and len(spec.seeds) % len(pseeds):
        raise BertlabError(
            f"{path}: {len(spec.seeds)} seeds do not split evenly over {len(pseeds)} pretrain_seeds; give "
            f"{len(pseeds)} x k fine-tune seeds (each pre-training seed fine-tunes the next k of them)"
        )


def split_shared(arm: Arm, stages: list[Stage], path: str) -> tuple[list[Stage], Stage] | None:
    """A pipeline arm's (stages before the last, the last), the last one able to start from a shared
    pre-training run; None when there is nothing before it to share."""
    if len(stages) < 2:
        return None
    *pre, last = stages
    if last.kind != "lightning" or last.init_from not in ("previous", pre[-1].name):
        raise BertlabError(
            f"{path}: arm {arm.name}: pretrain_seed shares the stages before the last one, so the last stage must "
            f"start from the stage before it (it has init_from {last.init_from!r})"
        )
    if re.search(r"\{(?:export|dir|ckpt):", " ".join(last.args)):
        raise BertlabError(f"{path}: arm {arm.name}: pretrain_seed: the last stage may not name earlier stages' files")
    return pre, last


def milestones(stage: Stage) -> set[int] | None:
    """The ``StepBudget`` milestones a stage sets: the callbacks of its config files (a later file's list replaces
    an earlier one's, and so does a ``--trainer.callbacks LIST`` argument); None when an argument edits the list
    another way (``--trainer.callbacks+=``), which only the CLI resolves."""
    callbacks = []
    for cfg in stage.config:
        trainer = (read_yaml(cfg) or {}).get("trainer") or {}
        if "callbacks" in trainer:
            callbacks = trainer["callbacks"] or []
    for flag, value in zip(stage.args, stage.args[1:] + [None]):
        if flag == "--trainer.callbacks" and value is not None:
            callbacks = yaml.safe_load(value) or []
        elif flag.startswith("--trainer.callbacks"):
            return None
    found: set[int] = set()
    for cb in callbacks if isinstance(callbacks, list) else []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("StepBudget"):
            found |= set((cb.get("init_args") or {}).get("milestones") or [])
    return found


def check_groups(spec: Ablation, path: str) -> None:
    """``pretrain`` and ``from_milestone`` make sense, now rather than after an hour of other arms."""
    first: dict[str, Arm] = {}
    for arm in spec.arms:
        name, milestone = arm.name, arm.from_milestone
        if (arm.pretrain is not None or milestone is not None) and (not spec.pretraining_seeds or not arm.pipeline):
            raise BertlabError(f"{path}: arm {name}: pretrain and from_milestone need a pipeline and pretrain_seed")
        if arm.pipeline:
            other = first.setdefault(arm.group, arm)
            if (other.pipeline, other.args, other.set, other.skip) != (arm.pipeline, arm.args, arm.set, arm.skip):
                raise BertlabError(
                    f"{path}: arms {other.name} and {name} share pre-training group {arm.group!r} but differ in "
                    "pipeline, args, set or skip; one group is one pre-training run"
                )
        if milestone is None:
            continue
        if not isinstance(milestone, int) or isinstance(milestone, bool) or milestone < 1:
            raise BertlabError(f"{path}: arm {name}: from_milestone must be a positive step, got {milestone!r}")
        *pre, _ = arm.stages()
        have = milestones(pre[-1]) if pre else set()
        if have is not None and milestone not in have:
            raise BertlabError(
                f"{path}: arm {name}: from_milestone {milestone}, but stage {pre[-1].name if pre else '?'} of "
                f"{arm.pipeline} exports milestones {sorted(have) or 'none'} (StepBudget milestones)"
            )
