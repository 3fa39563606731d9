"""What an ablation file says: its arms and seeds as ``Ablation`` and ``Arm`` records, checked when it loads.

``load_ablation`` reads ``configs/ablations/NAME.yaml`` and refuses, before anything runs, with one error that
names the file and the field: unknown keys, arms without a name or with the same name, seeds that are not
distinct integers (a list, one integer, ``"0,1,2"`` or a range ``"0-4"``), ``pretrain_seeds`` that do not split
the seeds evenly, config files that do not exist, baselines that name no arm, ``set`` overrides that name no
stage of the arm's pipeline, and pre-training groups and milestones that cannot work
(``bertlab.shared_pretraining`` says what they mean). Running the arms is ``bertlab.ablation``'s.

A pipeline arm's ``set`` maps ``STAGE.KEY: VALUE`` to one stage's argument, as ``bertlab pipeline --set
STAGE.KEY=VALUE`` does (``bertlab.pipeline_spec.parse_overrides``): the masking arms are one pipeline each with
its own masker, ``{mlm.data.init_args.masker: {class_path: ...}}``. ``args`` reach every stage.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields

from bertlab.core.errors import BertlabError
from bertlab.core.yaml_files import read_yaml
from bertlab.pipeline_spec import Stage, apply_overrides, as_args, check_stages, load_pipeline, parse_overrides


@dataclass
class Arm:
    name: str
    config: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    pipeline: str | None = None
    set: dict[str, list[str]] = field(default_factory=dict)
    note: str | None = None
    pretrain: str | None = None
    from_milestone: int | None = None
    baseline: str | None = None

    @property
    def group(self) -> str:
        """The pre-training group whose shared run the arm fine-tunes from: ``pretrain``, else its own name."""
        return self.pretrain or self.name

    def stages(self, where: str | None = None) -> list[Stage]:
        """The stages of the arm's pipeline, each with the arguments ``set`` gives it after its own."""
        return apply_overrides(load_pipeline(self.pipeline)[1], self.set, where or f"arm {self.name}: set")


@dataclass
class Ablation:
    name: str
    root: str
    base: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    metrics: list[str] = field(default_factory=lambda: ["test/acc", "test/f1"])
    baseline: str | None = None
    arms: list[Arm] = field(default_factory=list)
    pretrain_seed: int | None = None
    pretrain_seeds: list[int] | None = None

    @property
    def pretraining_seeds(self) -> list[int]:
        """The pre-training seeds: ``pretrain_seeds``, or ``[pretrain_seed]``, or none."""
        if self.pretrain_seeds:
            return list(self.pretrain_seeds)
        return [] if self.pretrain_seed is None else [self.pretrain_seed]


KEYS = {f.name for f in fields(Ablation)}
ARM_KEYS = {f.name for f in fields(Arm)}


def parse_seeds(value, where: str) -> list[int]:
    """Seeds as a list of integers, from a list, one integer, ``"0,1,2"`` or a range ``"0-4"`` (both ends in)."""
    items = value if isinstance(value, list) else str(value).split(",")
    seeds: list[int] = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text:
            raise BertlabError(f"{where}: {value!r} is not a list of integer seeds (e.g. 0,1,2 or 0-4)")
        lo, dash, hi = text.partition("-") if not text.startswith("-") else (text, "", "")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(text)]
        except ValueError:
            raise BertlabError(f"{where}: {text!r} is not an integer seed or a range like 0-4") from None
        if dash and int(hi) < int(lo):
            raise BertlabError(f"{where}: range {text!r} runs backwards")
    if not seeds or len(set(seeds)) != len(seeds):
        raise BertlabError(f"{where}: seeds must be distinct integers, got {value!r}")
    return seeds


def _paths(raw, where: str) -> list[str]:
    """A config file or a list of them."""
    paths = [raw] if isinstance(raw, str) else list(raw or [])
    if any(not isinstance(p, str) for p in paths):
        raise BertlabError(f"{where}: a config file path or a list of them, got {raw!r}")
    return paths


def _text(raw: dict, key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        what = "names a group of arms" if key == "pretrain" else "is a string"
        raise BertlabError(f"{where}: {key} {what}, got {value!r}")
    return value


def _overrides(raw, where: str) -> dict[str, list[str]]:
    """An arm's ``set``: ``{STAGE.KEY: VALUE}``, each value passed as ``--set STAGE.KEY=VALUE`` would be."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BertlabError(f"{where} maps STAGE.KEY to a value (e.g. mlm.trainer.max_steps: 400), got {raw!r}")
    return parse_overrides([f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in raw.items()], where)


def _arm(raw, path: str, base: list[str]) -> Arm:
    if not isinstance(raw, dict):
        raise BertlabError(f"{path}: an arm is a mapping with a name (and config, args, pipeline, ...), got {raw!r}")
    bad = set(raw) - ARM_KEYS
    if bad or "name" not in raw:
        raise BertlabError(f"{path}: arm {raw.get('name', '?')!r}: needs a name; unknown key(s) {sorted(bad)}")
    name = str(raw["name"])
    where = f"{path}: arm {name}"
    arm = Arm(
        name=name,
        config=_paths(raw.get("config"), f"{where}: config"),
        args=as_args(raw.get("args"), where),
        pipeline=_text(raw, "pipeline", where) if raw.get("pipeline") else None,
        set=_overrides(raw.get("set"), f"{where}: set"),
        note=raw.get("note"),
        pretrain=_text(raw, "pretrain", where),
        from_milestone=raw.get("from_milestone"),
        baseline=raw.get("baseline"),
    )
    for cfg in base + arm.config:
        if not os.path.isfile(cfg):
            raise BertlabError(f"{where}: config file {cfg!r} does not exist")
        read_yaml(cfg)
    if arm.set and not arm.pipeline:
        raise BertlabError(f"{where}: set overrides stages of a pipeline; an arm without one takes `args`")
    if arm.pipeline:
        check_stages(arm.stages(f"{where}: set"))  # now rather than after an hour of other arms
    return arm


def load_ablation(path: str) -> Ablation:
    raw = read_yaml(path, "ablation file") or {}
    if not isinstance(raw, dict):
        raise BertlabError(f"{path}: an ablation is a mapping with name, base, args, seeds, arms, ...")
    unknown = set(raw) - KEYS
    if unknown:
        raise BertlabError(f"{path}: unknown key(s) {sorted(unknown)}")
    name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
    pretrain_seed = raw.get("pretrain_seed")
    if pretrain_seed is not None and (not isinstance(pretrain_seed, int) or isinstance(pretrain_seed, bool)):
        raise BertlabError(f"{path}: pretrain_seed must be an integer seed, got {pretrain_seed!r}")
    metrics = raw.get("metrics", ["test/acc", "test/f1"])
    if not isinstance(metrics, list) or not metrics or any(not isinstance(m, str) for m in metrics):
        raise BertlabError(f"{path}: metrics is a list of logged test metrics (e.g. [test/acc]), got {metrics!r}")
    spec = Ablation(
        name=name,
        root=str(raw.get("root") or os.path.join("runs", "ablations", name)),
        seeds=parse_seeds(raw.get("seeds", [0, 1, 2]), f"{path}: seeds"),
        metrics=metrics,
        pretrain_seed=pretrain_seed,
    )
    if raw.get("pretrain_seeds") is not None:
        spec.pretrain_seeds = parse_seeds(raw["pretrain_seeds"], f"{path}: pretrain_seeds")
    check_nesting(spec, path)
    spec.base = _paths(raw.get("base"), f"{path}: base")
    spec.args = as_args(raw.get("args"), path)
    arms = raw.get("arms") or []
    if not isinstance(arms, list) or not arms:
        raise BertlabError(f"{path}: no arms")
    spec.arms = [_arm(arm, path, spec.base) for arm in arms]
    names = [a.name for a in spec.arms]
    spec.baseline = raw.get("baseline", names[0])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BertlabError(f"{path}: arm name(s) {twice} used twice; each arm needs its own name (and run directory)")
    for baseline in [spec.baseline] + [a.baseline for a in spec.arms]:
        if baseline is not None and baseline not in names:
            raise BertlabError(f"{path}: baseline {baseline!r} names no arm ({names})")
    for arm in spec.arms:
        if spec.pretraining_seeds and arm.pipeline:
            split_shared(arm, arm.stages(), path)
    check_groups(spec, path)
    return spec


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


def check_groups(spec: Ablation, path: str) -> None:
    """``pretrain`` and ``from_milestone`` make sense, now rather than after an hour of other arms."""
    first: dict[str, Arm] = {}
    for arm in spec.arms:
        name, milestone = arm.name, arm.from_milestone
        if (arm.pretrain is not None or milestone is not None) and (not spec.pretraining_seeds or not arm.pipeline):
            raise BertlabError(f"{path}: arm {name}: pretrain and from_milestone need a pipeline and pretrain_seed")
        if arm.pipeline:
            other = first.setdefault(arm.group, arm)
            if (other.pipeline, other.args, other.set) != (arm.pipeline, arm.args, arm.set):
                raise BertlabError(
                    f"{path}: arms {other.name} and {name} share pre-training group {arm.group!r} but differ in "
                    "pipeline, args or set; one group is one pre-training run"
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
