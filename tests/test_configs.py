"""Every stage config, pipeline and ablation in configs/ resolves: each LightningCLI run it would start
parses to a full config (``--print_config``), layered on ``configs/base.yaml``, with its pipeline or
ablation arguments and placeholders filled with stand-in paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bertlab.ablation_spec import load_ablation
from bertlab.pipeline_spec import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
STAGE_CONFIGS = sorted(str(p) for d in ("classify", "pet", "mlm") for p in (CONFIGS / d).glob("*.yaml"))
PIPELINES = sorted(str(p) for p in (CONFIGS / "pipelines").rglob("*.yaml") if p.parent.name != "stages")
ABLATIONS = sorted(str(p) for p in (CONFIGS / "ablations").glob("*.yaml"))
LAYERED = {"probe_fine_food.yaml": "configs/mlm/fine_food_tapt.yaml"}  # a delta: it needs its stage config


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
    configs = [LAYERED[Path(path).name], path] if Path(path).name in LAYERED else [path]
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


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: Path(p).stem)
def test_every_ablation_arm_resolves(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_ablation(path)
    for arm in spec.arms:
        if arm.pipeline:
            continue  # a pipeline file: test_every_pipeline_stage_resolves covers it
        print_config(capsys, "fit", spec.base + arm.config, spec.args + arm.args)


def test_recipe_deltas_hold_no_output_paths():
    import yaml

    for path in sorted((CONFIGS / "recipes").rglob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        assert "default_root_dir" not in (spec.get("trainer") or {}), path
        assert "dirpath" not in str(spec.get("export") or ""), path
