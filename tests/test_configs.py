"""Every stage config, pipeline and ablation in configs/ resolves: each LightningCLI run it would start
parses to a full config (``--print_config``), layered on ``configs/base.yaml``, with its pipeline or
ablation arguments and placeholders filled with stand-in paths. Every YAML file under configs/ (and the
test fixture under tests/configs/) is reached by one of these tests, and no experiment is more than three
files deep (ablation -> pipeline -> stage config)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bertlab.ablation_spec import load_ablation
from bertlab.core.yaml_files import read_yaml
from bertlab.demo import PIPELINE, RUNS
from bertlab.pipeline_spec import apply_overrides, load_pipeline, parse_overrides, skip_stages

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
STAGE_DIRS = ("classify", "pet", "mlm", "token_tagger")
TEST_FIXTURE = str(ROOT / "tests" / "configs" / "tiny_test.yaml")
STAGE_CONFIGS = sorted(str(p) for d in STAGE_DIRS for p in (CONFIGS / d).glob("*.yaml")) + [TEST_FIXTURE]
PIPELINES = sorted(str(p) for p in (CONFIGS / "pipelines").rglob("*.yaml") if p.parent.name != "stages")
ABLATIONS = sorted(str(p) for p in (CONFIGS / "ablations").glob("*.yaml"))
RECIPES = sorted(str(p) for p in (CONFIGS / "recipes").rglob("*.yaml"))
TAPT, ZH_MLM = "configs/mlm/fine_food_tapt.yaml", "configs/mlm/zh_mlm.yaml"
LAYERED = {  # the MLM deltas, over the base they layer on (the MLM base of their language)
    "probe_fine_food.yaml": [TAPT],
    "snownlp_masking.yaml": [ZH_MLM],
}


def print_config(capsys, subcommand: str, configs: list[str], args: list[str]) -> str:
    from bertlab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *[a for c in configs for a in ("--config", c)], *args, "--print_config"])
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.err[-2000:]
    return out.out


def stand_in(arg: str) -> str:
    return re.sub(r"\{[a-z]+(:[^}]*)?\}", "/nonexistent/stand-in", arg)


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: Path(p).parent.name + "/" + Path(p).stem)
def test_every_stage_config_resolves(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    configs = [*LAYERED.get(Path(path).name, []), path]
    out = print_config(capsys, "fit", configs, [])
    assert "log_every_n_steps: 20" in out  # from configs/base.yaml
    assert f"precision: {'32-true' if Path(path).stem == 'tiny_test' else 'auto'}" in out  # tests pin fp32
    if Path(path).parent.name in ("classify", "pet") and Path(path).stem != "tiny_test":
        assert "pytorch_lightning.callbacks.ModelCheckpoint" in out  # the shared callbacks


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: Path(p).stem)
def test_every_pipeline_stage_resolves(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    _, stages = load_pipeline(path)
    runs = [s for s in stages if s.kind == "lightning"]
    assert runs or all(s.kind == "init_model" for s in stages)
    for stage in runs:
        out = print_config(capsys, stage.subcommand, stage.config, [stand_in(a) for a in stage.args])
        assert "class_path: " in out


@pytest.mark.parametrize("label", sorted(RUNS), ids=str)
def test_the_demo_runs_resolve(label, capsys, monkeypatch):
    """``make demo``: configs/pipelines/fine_food_3stage.yaml at the demo budget, with and without TAPT."""
    monkeypatch.chdir(ROOT)
    _, skip, overrides = RUNS[label]
    stages = skip_stages(apply_overrides(load_pipeline(PIPELINE)[1], parse_overrides(overrides)), skip)
    for stage in stages:
        out = print_config(capsys, stage.subcommand, stage.config, [stand_in(a) for a in stage.args])
        assert "max_epochs: 1\n" in out if stage.name == "finetune" else "max_steps: 150\n" in out


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: Path(p).stem)
def test_every_ablation_arm_resolves(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_ablation(path)
    seen = set()
    for arm in spec.arms:
        if not arm.pipeline:
            print_config(capsys, "fit", spec.base + arm.config, spec.args + arm.args)
            continue
        if not (arm.set or arm.skip):
            continue  # the pipeline file as it is: test_every_pipeline_stage_resolves covers it
        for stage in arm.stages():  # the stages that the arm's set and skip change, with the table's args
            args = tuple(stand_in(a) for a in spec.args + arm.args + stage.args)
            if stage.kind == "lightning" and (stage.subcommand, *stage.config, *args) not in seen:
                seen.add((stage.subcommand, *stage.config, *args))
                print_config(capsys, stage.subcommand, stage.config, list(args))


def test_recipe_deltas_hold_no_output_paths():
    import yaml

    for path in sorted((CONFIGS / "recipes").rglob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        assert "default_root_dir" not in (spec.get("trainer") or {}), path
        assert "dirpath" not in str(spec.get("export") or ""), path


def _reached() -> dict[str, int]:
    """Every config file the tests above compose, with how many files deep it sits under its experiment
    (a stage config run alone is 1; an ablation is 1, its pipeline 2, that pipeline's stage configs 3)."""
    depth: dict[str, int] = {}

    def see(path: str, d: int) -> None:
        key = str((ROOT / path).resolve())
        depth[key] = max(depth.get(key, 0), d)

    def see_pipeline(path: str, d: int) -> None:
        see(path, d)
        for raw in read_yaml(path)["stages"]:
            configs = raw.get("config")
            if "include" in raw:  # a shared stage file one level down; its configs one further
                see(raw["include"], d + 1)
                configs = configs or read_yaml(raw["include"]).get("config")
                d_cfg = d + 2
            else:
                d_cfg = d + 1
            for cfg in [configs] if isinstance(configs, str) else configs or []:
                see(cfg, d_cfg)

    see("configs/base.yaml", 1)  # under every run (the CLI loads it first); not counted in an experiment's depth
    for path in STAGE_CONFIGS:
        see(path, 1)
    for path in PIPELINES:
        see_pipeline(path, 1)
    for path in ABLATIONS:
        see(path, 1)
        spec = load_ablation(path)
        for arm in spec.arms:
            for cfg in spec.base + arm.config:
                see(cfg, 2)
            if arm.pipeline:
                see_pipeline(arm.pipeline, 2)
    for path in RECIPES:  # composed over both classifier bases in tests/lightning_modules/test_classifier.py
        see(path, 2)
    return depth


def test_every_yaml_is_composed_and_no_experiment_is_more_than_three_files_deep(monkeypatch):
    monkeypatch.chdir(ROOT)
    depth = _reached()
    every = {str(p.resolve()) for p in CONFIGS.rglob("*.yaml")} | {TEST_FIXTURE}
    assert every - set(depth) == set(), "YAML files no test composes"
    deep = {str(Path(p).relative_to(ROOT)): d for p, d in depth.items() if d > 3}
    assert deep == {}, deep
