"""What an ablation file says: its arms and seeds as ``Ablation`` and ``Arm`` records, checked when it loads.

``load_ablation`` reads ``configs/ablations/NAME.yaml`` and refuses, before anything runs, with one error that
names the file and the field: unknown keys, arms without a name or with the same name, seeds that are not
distinct integers (a list, one integer, ``"0,1,2"`` or a range ``"0-4"``), ``pretrain_seeds`` that do not split
the seeds evenly, config files that do not exist, baselines that name no arm, ``set`` overrides that name no
stage of the arm's pipeline, and pre-training groups and milestones that cannot work
(``bertlab.shared_pretraining`` says what they mean). Running the arms is ``bertlab.ablation``'s.

A pipeline arm's ``set`` maps ``STAGE.KEY: VALUE`` to one stage's argument, as ``bertlab pipeline --set
STAGE.KEY=VALUE`` does (``bertlab.pipeline_spec.parse_overrides``): the masking arms are one pipeline each with
its own masker, ``{tapt.data.init_args.masker: {class_path: ...}}``. ``skip: [NAME, ...]`` leaves stages out,
as ``bertlab pipeline --skip`` does (``bertlab.pipeline_spec.skip_stages``): the stages table's arms are the
4-stage pipeline without its later MLM stages. ``args`` reach every stage.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields

from bertlab.ablation_types import Ablation, Arm
from bertlab.core.errors import BertlabError
from bertlab.core.yaml_files import read_yaml
from bertlab.pipeline_spec import (
    as_args,
    check_stages,
    parse_overrides,
)
from bertlab.shared_pretraining import check_groups, check_nesting, split_shared

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


def _paths(raw, where: str, what: str = "a config file path") -> list[str]:
    """A config file or a list of them (or stage names, ``what``)."""
    paths = [raw] if isinstance(raw, str) else list(raw or [])
    if any(not isinstance(p, str) for p in paths):
        raise BertlabError(f"{where}: {what} or a list of them, got {raw!r}")
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
        skip=_paths(raw.get("skip"), f"{where}: skip", "a stage name"),
        note=raw.get("note"),
        pretrain=_text(raw, "pretrain", where),
        from_milestone=raw.get("from_milestone"),
        baseline=raw.get("baseline"),
    )
    for cfg in base + arm.config:
        if not os.path.isfile(cfg):
            raise BertlabError(f"{where}: config file {cfg!r} does not exist")
        read_yaml(cfg)
    if (arm.set or arm.skip) and not arm.pipeline:
        raise BertlabError(f"{where}: set and skip change stages of a pipeline; an arm without one takes `args`")
    if arm.pipeline:
        check_stages(arm.stages(where))  # now rather than after an hour of other arms
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
