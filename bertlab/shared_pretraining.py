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
import re

from bertlab.core.errors import BertlabError
from bertlab.core.yaml_files import read_yaml
from bertlab.pipeline_spec import STAGE_FILE, Stage, export_dir, load_pipeline, stage_dir


def group(arm: dict) -> str:
    return arm.get("pretrain") or arm["name"]


def pretrain_seeds(spec: dict) -> list[int]:
    """The ablation's pre-training seeds: ``pretrain_seeds``, or ``[pretrain_seed]``, or none."""
    if spec.get("pretrain_seeds"):
        return list(spec["pretrain_seeds"])
    return [] if spec.get("pretrain_seed") is None else [spec["pretrain_seed"]]


def pretrain_seed_of(spec: dict, seed: int) -> int | None:
    """The pre-training seed whose export fine-tune seed ``seed`` starts from (its group of ``seeds``)."""
    pseeds = pretrain_seeds(spec)
    if not pseeds:
        return None
    seeds = list(spec["seeds"])
    per = max(1, len(seeds) // len(pseeds))
    index = seeds.index(seed) if seed in seeds else 0
    return pseeds[min(index // per, len(pseeds) - 1)]


def check_nesting(spec: dict, path: str) -> None:
    """``pretrain_seeds`` split ``seeds`` into equal groups of distinct integer seeds."""
    pseeds, seeds = pretrain_seeds(spec), spec["seeds"]
    if spec.get("pretrain_seeds") is not None and spec.get("pretrain_seed") is not None:
        raise BertlabError(f"{path}: give pretrain_seeds or pretrain_seed, not both")
    for name, values in (("pretrain_seeds", pseeds), ("seeds", seeds)):
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values) or len(set(values)) != len(values):
            raise BertlabError(f"{path}: {name} must be distinct integers, got {values!r}")
    if len(pseeds) > 1 and len(seeds) % len(pseeds):
        raise BertlabError(
            f"{path}: {len(seeds)} seeds do not split evenly over {len(pseeds)} pretrain_seeds; give "
            f"{len(pseeds)} x k fine-tune seeds (each pre-training seed fine-tunes the next k of them)"
        )


def pretrain_root(spec: dict, arm: dict, pretrain_seed: int) -> str:
    if spec.get("pretrain_seeds"):
        return os.path.join(spec["root"], group(arm), f"pretrain_seed{pretrain_seed}")
    return os.path.join(spec["root"], group(arm), "pretrain")


def shared_pretraining(spec: dict, arm: dict, stages: list[Stage] | None = None, pretrain_seed: int | None = None):
    """Under ``pretrain_seeds``, a pipeline arm's (stages before the last, the last, their shared root for
    ``pretrain_seed`` (default: the first), their arguments); None when the arm shares nothing."""
    pseeds = pretrain_seeds(spec)
    if not pseeds or not arm.get("pipeline"):
        return None
    seed = pseeds[0] if pretrain_seed is None else pretrain_seed
    stages = stages or load_pipeline(arm["pipeline"])[1]
    if len(stages) < 2:
        return None
    *pre, last = stages
    if last.kind != "lightning" or last.init_from not in ("previous", pre[-1].name):
        raise BertlabError(
            f"arm {arm['name']}: pretrain_seed shares the stages before the last one, so the last stage must "
            f"start from the stage before it (it has init_from {last.init_from!r})"
        )
    if re.search(r"\{(?:export|dir|ckpt):", " ".join(last.args)):
        raise BertlabError(f"arm {arm['name']}: pretrain_seed: the last stage may not name earlier stages' files")
    pre_extra = ["--seed_everything", str(seed), "--wandb.group", spec["name"]]
    pre_extra += ["--wandb.tags", json.dumps([group(arm), f"pretrain_seed{seed}"])]
    return pre, last, pretrain_root(spec, arm, seed), spec["args"] + arm["args"] + pre_extra


def fine_tune_source(arm: dict, pre: list[Stage], shared_root: str) -> str:
    """The directory the arm's fine-tune starts from: the shared run's export, or its milestone ``step-N``."""
    if arm.get("from_milestone") is None:
        return export_dir(shared_root, pre[-1].name)
    return os.path.join(stage_dir(shared_root, pre[-1].name), "milestones", f"step-{arm['from_milestone']}")


def fine_tune_stale(root: str, last: Stage, shared_root: str, pre: list[Stage]) -> bool:
    """The seed's fine-tune finished before its shared pre-training last ran, so it started from an export that
    has since been replaced. Its own fingerprint names the export's path, not the export, so it would look
    unchanged; the files' times tell (as ``make`` does)."""
    mine = os.path.join(stage_dir(root, last.name), STAGE_FILE)
    theirs = os.path.join(stage_dir(shared_root, pre[-1].name), STAGE_FILE) if pre else ""
    return os.path.isfile(mine) and os.path.isfile(theirs) and os.path.getmtime(mine) < os.path.getmtime(theirs)


def milestones(stage: Stage) -> set[int] | None:
    """The ``StepBudget`` milestones a stage's config files set (a later file's callbacks replace an earlier
    one's); None when its arguments set callbacks, which only the CLI resolves."""
    if any(a.startswith("--trainer.callbacks") for a in stage.args):
        return None
    callbacks = []
    for cfg in stage.config:
        trainer = (read_yaml(cfg) or {}).get("trainer") or {}
        if "callbacks" in trainer:
            callbacks = trainer["callbacks"] or []
    found: set[int] = set()
    for cb in callbacks:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("StepBudget"):
            found |= set((cb.get("init_args") or {}).get("milestones") or [])
    return found


def check_groups(spec: dict, path: str) -> None:
    """``pretrain`` and ``from_milestone`` make sense, now rather than after an hour of other arms."""
    first: dict[str, dict] = {}
    for arm in spec["arms"]:
        name, milestone = arm["name"], arm.get("from_milestone")
        if ("pretrain" in arm or milestone is not None) and (not pretrain_seeds(spec) or not arm.get("pipeline")):
            raise BertlabError(f"{path}: arm {name}: pretrain and from_milestone need a pipeline and pretrain_seed")
        if "pretrain" in arm and (not isinstance(arm["pretrain"], str) or not arm["pretrain"]):
            raise BertlabError(f"{path}: arm {name}: pretrain names a group of arms, got {arm['pretrain']!r}")
        if arm.get("pipeline"):
            other = first.setdefault(group(arm), arm)
            if (other["pipeline"], other["args"]) != (arm["pipeline"], arm["args"]):
                raise BertlabError(
                    f"{path}: arms {other['name']} and {name} share pre-training group {group(arm)!r} but differ in "
                    "pipeline or args; one group is one pre-training run"
                )
        if milestone is None:
            continue
        if not isinstance(milestone, int) or isinstance(milestone, bool) or milestone < 1:
            raise BertlabError(f"{path}: arm {name}: from_milestone must be a positive step, got {milestone!r}")
        *pre, _ = load_pipeline(arm["pipeline"])[1]
        have = milestones(pre[-1]) if pre else set()
        if have is not None and milestone not in have:
            raise BertlabError(
                f"{path}: arm {name}: from_milestone {milestone}, but stage {pre[-1].name if pre else '?'} of "
                f"{arm['pipeline']} exports milestones {sorted(have) or 'none'} (StepBudget milestones)"
            )
