"""What a pipeline file says: its stages, shared stage files, placeholders and the wiring checks.

``load_pipeline`` reads ``configs/pipelines/NAME.yaml`` into ``Stage`` records (a stage may be
``{include: configs/pipelines/stages/NAME.yaml}``, keys beside ``include`` overriding the file's);
``parse_overrides`` and ``apply_overrides`` give stages extra arguments (``--set STAGE.KEY=VALUE``, an ablation
arm's ``set``); ``skip_stages`` leaves stages out (``--skip NAME``, an arm's ``skip``); ``check_stages`` finds
wiring mistakes before any stage runs; ``fill`` substitutes ``{root}``, ``{prev}``, ``{export:NAME}``,
``{dir:NAME}`` and ``{ckpt:NAME}``. Running the stages is
``bertlab.pipeline``'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

from bertlab.core.errors import BertlabError
from bertlab.core.yaml_files import read_yaml

KINDS = ("lightning", "init_model")
STAGE_FILE = "stage.json"  # each stage's record: fingerprint, arguments, metrics


@dataclass
class Stage:
    name: str
    kind: str = "lightning"
    config: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    init_from: str = "previous"
    test: bool = False
    subcommand: str = "fit"


def as_args(raw, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        out = []
        for k, v in raw.items():
            out += [f"--{k}", v if isinstance(v, str) else json.dumps(v)]
        return out
    if isinstance(raw, list):
        return [str(x) for x in raw]
    raise BertlabError(f"{where}: `args` must be a mapping or a list, got {type(raw).__name__}")


def _included(raw: dict, where: str) -> dict:
    """A stage given as ``{include: FILE, ...}``: the stage mapping in FILE, the other keys overriding it."""
    if "include" not in raw:
        return raw
    path = raw["include"]
    if not isinstance(path, str) or not os.path.isfile(path):
        raise BertlabError(f"{where}: include {path!r} is not a stage file")
    base = read_yaml(path, "stage file") or {}
    if not isinstance(base, dict):
        raise BertlabError(f"{path}: a stage file holds one stage (a mapping with name, config, args, ...)")
    return {**base, **{k: v for k, v in raw.items() if k != "include"}}


def load_pipeline(path: str) -> tuple[str, list[Stage]]:
    spec = read_yaml(path, "pipeline file") or {}
    if not isinstance(spec, dict):
        raise BertlabError(f"{path}: a pipeline is a mapping with name, root, stages")
    unknown = set(spec) - {"name", "root", "stages"}
    if unknown:
        raise BertlabError(f"{path}: unknown key(s) {sorted(unknown)}; a pipeline has name, root, stages")
    stages = []
    for i, raw in enumerate(spec.get("stages") or []):
        where = f"{path}: stage {i + 1}"
        if not isinstance(raw, dict):
            raise BertlabError(f"{where}: a stage is a mapping (name, config, args, ...), got {raw!r}")
        raw = _included(raw, where)
        bad = set(raw) - {"name", "kind", "config", "args", "init_from", "test", "subcommand"}
        if bad or "name" not in raw:
            raise BertlabError(
                f"{where}: needs a `name`; unknown key(s) {sorted(bad)}" if bad else f"{where}: needs a `name`"
            )
        config = raw.get("config") or []
        stage = Stage(
            name=str(raw["name"]),
            kind=raw.get("kind", "lightning"),
            config=[config] if isinstance(config, str) else list(config),
            args=as_args(raw.get("args"), where),
            init_from=str(raw.get("init_from", "previous")),
            test=bool(raw.get("test", False)),
            subcommand=raw.get("subcommand", "fit"),
        )
        if stage.kind not in KINDS:
            raise BertlabError(f"{where} ({stage.name}): unknown kind {stage.kind!r}; kinds: {', '.join(KINDS)}")
        for cfg in stage.config:
            if not os.path.isfile(cfg):
                raise BertlabError(f"{where} ({stage.name}): config file {cfg!r} does not exist")
            read_yaml(cfg)  # a syntax error in a late stage's config is found before the first stage trains
        stages.append(stage)
    if not stages:
        raise BertlabError(f"{path}: no stages")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise BertlabError(f"{path}: stage names must be unique, got {names}")
    return spec.get("root") or os.path.join(
        "runs", spec.get("name") or os.path.splitext(os.path.basename(path))[0]
    ), stages


def parse_overrides(items: list[str], where: str = "--set") -> dict[str, list[str]]:
    """``STAGE.KEY=VALUE`` items (``bertlab pipeline --set``, an ablation arm's ``set``) as each stage's
    extra arguments, ``{STAGE: ["--KEY", VALUE, ...]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, arg = key.partition(".")
        if not sep or not dot or not arg:
            raise BertlabError(f"{where} {item!r}: expected STAGE.KEY=VALUE, e.g. finetune.trainer.max_epochs=1")
        out.setdefault(stage, []).extend([f"--{arg}", value])
    return out


def apply_overrides(stages: list[Stage], overrides: dict[str, list[str]], where: str = "--set") -> list[Stage]:
    """``stages`` with each named stage's override arguments: ``--KEY VALUE`` replaces the value the stage gives
    KEY itself, else comes after its arguments (so it wins either way, and placeholders it replaces are gone); a
    name that is no stage is an error."""
    names = [s.name for s in stages]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise BertlabError(f"{where} names stage {unknown[0]!r}; stages: {names}")
    out = []
    for stage in stages:
        args = list(stage.args)
        extra = overrides.get(stage.name, [])
        for key, value in zip(extra[::2], extra[1::2]):
            own = [i for i in range(len(args) - 1) if args[i] == key]
            if own:
                args[own[-1] + 1] = value
            else:
                args += [key, value]
        out.append(dataclasses.replace(stage, args=args) if extra else stage)
    return out


def skip_stages(
    stages: list[Stage], skip: list[str], where: str = "--skip", overrides: dict[str, list[str]] | None = None
) -> list[Stage]:
    """``stages`` without the ones named in ``skip`` (a shorter pipeline, e.g. the 4-stage one without its domain
    and task MLM). A stage that started from the stage before it starts from the last one still run, or from
    its own config's model when none is left before it. A name that is no stage, skipping every stage, skipping
    a stage that ``overrides`` change, and skipping one that a kept stage names (``init_from``,
    ``{export:NAME}``, ...) are errors. Apply the overrides first: one may replace a placeholder."""
    names = [s.name for s in stages]
    unknown = [name for name in skip if name not in names]
    if unknown:
        raise BertlabError(f"{where} names stage {unknown[0]!r}; stages: {names}")
    changed = sorted(set(overrides or {}) & set(skip))
    if changed:
        raise BertlabError(f"{where} skips {changed[0]!r}, which set changes")
    kept = [s for s in stages if s.name not in skip]
    if not kept:
        raise BertlabError(f"{where} skips every stage of {names}")
    for stage in kept:
        named = {stage.init_from} | set(re.findall(r"\{(?:export|dir|ckpt):([^}]*)\}", " ".join(stage.args)))
        read = sorted(named & set(skip))
        if read:
            raise BertlabError(f"{where} skips {read[0]!r}, which stage {stage.name!r} starts from or reads")
    return kept


def stage_dir(root: str, name: str) -> str:
    return os.path.join(root, name)


def export_dir(root: str, name: str) -> str:
    return os.path.join(root, name, "export")


def fill(arg: str, root: str, prev: str | None, names: list[str], dry: bool = False) -> str:
    def sub(m: re.Match) -> str:
        key, _, ref = m.group(1).partition(":")
        if key == "root":
            return root
        if key == "prev":
            if prev is None:
                raise BertlabError(f"argument {arg!r} uses {{prev}} in the first stage")
            return prev
        if key in ("export", "dir") and ref in names:
            return export_dir(root, ref) if key == "export" else stage_dir(root, ref)
        if key == "ckpt" and ref in names:
            checkpoint = read_json(os.path.join(export_dir(root, ref), "bertlab_export.json")).get("checkpoint")
            if not checkpoint and dry:  # checking before stage `ref` has run: a path it will write
                return os.path.join(stage_dir(root, ref), "checkpoints", "best.ckpt")
            if not checkpoint:
                raise BertlabError(
                    f"argument {arg!r}: stage {ref!r} has no best checkpoint in its export; give it a "
                    "ModelCheckpoint and run it first"
                )
            return checkpoint
        raise BertlabError(f"argument {arg!r}: unknown placeholder {m.group(0)} (stages: {names})")

    out = re.sub(_KNOWN, sub, arg)
    typo = _PLACEHOLDER.search(out)
    if typo:
        raise BertlabError(
            f"argument {arg!r}: unknown placeholder {typo.group(0)}; use {{root}}, {{prev}}, {{export:NAME}}, "
            f"{{dir:NAME}} or {{ckpt:NAME}}"
        )
    return out


# Anything shaped like a placeholder that survives substitution is a typo ({rot}, {exports:x}); JSON and
# YAML flow mappings ({"a": 1}, {a: 1}) have a space or a quote and do not match.
_KNOWN = re.compile(r"\{(root|prev|export:[^}]*|dir:[^}]*|ckpt:[^}]*)\}")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+(?::[^}\s]*)?\}")


def check_stages(stages: list[Stage]) -> None:
    """Catch wiring mistakes before any stage runs (a late stage's typo should not cost hours)."""
    for i, stage in enumerate(stages):
        earlier = {s.name: s for s in stages[:i]}
        for arg in stage.args:
            typo = _PLACEHOLDER.search(re.sub(_KNOWN, "", arg))
            if typo:
                raise BertlabError(
                    f"stage {stage.name}: argument {arg!r}: unknown placeholder {typo.group(0)}; use {{root}}, "
                    "{prev}, {export:NAME}, {dir:NAME} or {ckpt:NAME}"
                )
        refs = re.findall(r"\{(?:export|dir|ckpt):([^}]*)\}", " ".join(stage.args))
        for ref in refs:
            if ref not in earlier:
                raise BertlabError(
                    f"stage {stage.name}: a placeholder names {ref!r}, which is not an earlier stage "
                    f"({list(earlier) or 'none'})"
                )
        if "{prev}" in " ".join(stage.args) and i == 0:
            raise BertlabError(f"stage {stage.name}: {{prev}} in the first stage")
        if stage.kind != "lightning" or stage.init_from == "none":
            continue
        source = stages[i - 1] if stage.init_from == "previous" and i > 0 else earlier.get(stage.init_from)
        if stage.init_from not in ("previous",) and source is None:
            raise BertlabError(
                f"stage {stage.name}: init_from {stage.init_from!r} names no earlier stage ({list(earlier) or 'none'})"
            )
        if source is not None and source.kind == "lightning" and source.subcommand != "fit":
            raise BertlabError(
                f"stage {stage.name} starts from {source.name!r}, a `{source.subcommand}` stage that exports nothing; "
                "set `init_from: none` or name a fit stage"
            )


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)
