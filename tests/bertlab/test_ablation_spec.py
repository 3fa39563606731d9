"""``bertlab.ablation_spec``: an ablation file loads into typed ``Ablation``/``Arm`` records with the file's
defaults, survives pickling (launchers ship it to other processes), and each bad field is one error naming it."""

import json
import os
import pickle

import pytest
import yaml

from bertlab.ablation_report import table_meta
from bertlab.ablation_spec import Ablation, Arm, load_ablation
from bertlab.core.errors import BertlabError
from tests.bertlab.cli_helpers import ROOT

TINY_CONFIG = os.path.join(ROOT, "tests/configs/tiny_test.yaml")


def _write(tmp_path, spec: dict) -> str:
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_a_file_loads_into_typed_records_with_its_defaults(tmp_path):
    arms = [{"name": "a"}, {"name": "b", "config": TINY_CONFIG, "args": {"trainer.max_steps": 3}, "baseline": "a"}]
    spec = load_ablation(_write(tmp_path, {"base": TINY_CONFIG, "args": ["--trainer.max_epochs", "1"], "arms": arms}))
    assert spec == Ablation(
        name="abl",
        root=os.path.join("runs", "ablations", "abl"),
        base=[TINY_CONFIG],
        args=["--trainer.max_epochs", "1"],
        seeds=[0, 1, 2],
        metrics=["test/acc", "test/f1"],
        baseline="a",
        arms=[Arm("a"), Arm("b", config=[TINY_CONFIG], args=["--trainer.max_steps", "3"], baseline="a")],
    )
    assert [a.group for a in spec.arms] == ["a", "b"] and spec.pretraining_seeds == []
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_seeds_as_a_range_nest_under_pretrain_seeds(tmp_path):
    spec = load_ablation(_write(tmp_path, {"seeds": "0-3", "pretrain_seeds": "7,9", "arms": [{"name": "a"}]}))
    assert spec.seeds == [0, 1, 2, 3] and spec.pretrain_seeds == [7, 9] and spec.pretraining_seeds == [7, 9]


@pytest.mark.parametrize(
    "seeds, recorded", [({"pretrain_seed": 0}, [0]), ({"pretrain_seeds": [4, 5]}, [4, 5]), ({}, [])]
)
def test_the_table_records_the_pre_training_seeds(seeds, recorded):
    meta = table_meta(Ablation("toy", "out", seeds=[0, 1], arms=[Arm("a"), Arm("b", baseline="a")], **seeds), "cmd")
    assert meta["pretrain_seeds"] == recorded and meta["bases"] == {"b": "a"} and meta["order"] == ["a", "b"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arm": 1}, r"unknown key\(s\) \['arm'\]"),
        ({"arms": []}, "no arms"),
        ({"arms": ["a"]}, "an arm is a mapping with a name"),
        ({"arms": [{"config": TINY_CONFIG}]}, r"arm '\?': needs a name"),
        ({"arms": [{"name": "a", "seed": 1}]}, r"arm 'a': needs a name; unknown key\(s\) \['seed'\]"),
        ({"arms": [{"name": "a"}, {"name": "a"}]}, r"arm name\(s\) \['a'\] used twice"),
        ({"arms": [{"name": "a", "config": "nowhere.yaml"}]}, "arm a: config file 'nowhere.yaml' does not exist"),
        ({"arms": [{"name": "a", "config": [3]}]}, "arm a: config: a config file path or a list of them"),
        ({"arms": [{"name": "a", "pretrain": ""}]}, "arm a: pretrain names a group of arms, got ''"),
        ({"baseline": "z"}, r"baseline 'z' names no arm \(\['a'\]\)"),
        ({"seeds": "0,1.5"}, "seeds: '1.5' is not an integer seed or a range like 0-4"),
        ({"seeds": [0, True]}, r"seeds: \[0, True\] is not a list of integer seeds"),
        ({"metrics": "test/acc"}, "metrics is a list of logged test metrics"),
        ({"pretrain_seed": 0, "pretrain_seeds": [0, 1]}, "give pretrain_seeds or pretrain_seed, not both"),
        ({"seeds": [0, 1, 2], "pretrain_seeds": [0, 1]}, "3 seeds do not split evenly over 2 pretrain_seeds"),
    ],
)
def test_each_bad_field_is_one_error_naming_the_file(tmp_path, change, message):
    path = _write(tmp_path, {"base": [TINY_CONFIG], "arms": [{"name": "a"}], **change})
    with pytest.raises(BertlabError, match=message) as info:
        load_ablation(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


# ------------------------------------------------------------ an arm's `set`: one stage's arguments


def _two_stage_pipeline(tmp_path) -> str:
    stages = [{"name": "mlm", "config": TINY_CONFIG, "args": {"trainer.max_epochs": -1}}, {"name": "finetune"}]
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return str(path)


def test_set_gives_one_stage_the_arguments_bertlab_pipeline_set_would(tmp_path):
    from bertlab.pipeline_spec import apply_overrides, load_pipeline, parse_overrides

    pipe = _two_stage_pipeline(tmp_path)
    masker = {"class_path": "datamodules.maskers.SpanMasker", "init_args": {"mlm_probability": 0.15}}
    arm = {"name": "span", "pipeline": pipe, "set": {"mlm.data.init_args.masker": masker, "mlm.trainer.max_steps": 4}}
    spec = load_ablation(_write(tmp_path, {"arms": [arm]}))
    mlm, finetune = spec.arms[0].stages()
    assert mlm.args == ["--trainer.max_epochs", "-1", "--data.init_args.masker", json.dumps(masker)] + [
        "--trainer.max_steps",
        "4",
    ]  # after the stage's own arguments, so they win
    assert finetune.args == []
    cli = [f"mlm.data.init_args.masker={json.dumps(masker)}", "mlm.trainer.max_steps=4"]
    assert spec.arms[0].stages() == apply_overrides(load_pipeline(pipe)[1], parse_overrides(cli))
    assert load_pipeline(pipe)[1][0].args == ["--trainer.max_epochs", "-1"]  # the pipeline file itself is unchanged


@pytest.mark.parametrize(
    "arm, message",
    [
        ({"set": {"mlmm.trainer.max_steps": 4}}, r"arm a: set names stage 'mlmm'; stages: \['mlm', 'finetune'\]"),
        ({"set": {"mlm": 4}}, r"arm a: set 'mlm=4': expected STAGE\.KEY=VALUE"),
        ({"set": ["mlm.trainer.max_steps=4"]}, "arm a: set maps STAGE.KEY to a value"),
        ({"pipeline": None, "set": {"mlm.trainer.max_steps": 4}}, "arm a: set and skip change stages of a pipeline"),
    ],
)
def test_a_bad_set_is_one_error_naming_the_file_and_the_arm(tmp_path, arm, message):
    path = _write(tmp_path, {"arms": [{"name": "a", "pipeline": _two_stage_pipeline(tmp_path), **arm}]})
    with pytest.raises(BertlabError, match=message) as info:
        load_ablation(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_ablate_refuses_a_set_naming_no_stage_before_anything_runs(tmp_path, capsys):
    from bertlab.cli import main as bertlab_main

    arms = [{"name": "a"}, {"name": "b", "pipeline": _two_stage_pipeline(tmp_path), "set": {"tapt.x": 1}}]
    path = _write(tmp_path, {"root": str(tmp_path / "out"), "base": [TINY_CONFIG], "arms": arms})
    code, err = bertlab_main(["ablate", path]), capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"bertlab: error: {path}: arm b: set names stage 'tapt'; stages: ['mlm', 'finetune']")
    assert not os.path.exists(tmp_path / "out")


# ------------------------------------------------------------ an arm's `skip`: a shorter pipeline


def _three_stage_pipeline(tmp_path) -> str:
    stages = [
        {"name": "init", "config": TINY_CONFIG, "init_from": "none"},
        {"name": "general", "config": TINY_CONFIG},
        {"name": "task", "config": TINY_CONFIG, "args": {"wandb.name": "{dir:general}"}},
        {"name": "finetune", "config": TINY_CONFIG, "test": True},
    ]
    path = tmp_path / "pipe4.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return str(path)


def test_skip_leaves_stages_out_and_the_next_one_starts_from_the_last_one_run(tmp_path):
    from bertlab.pipeline import stage_args
    from bertlab.pipeline_spec import load_pipeline, skip_stages

    pipe = _three_stage_pipeline(tmp_path)
    arm = {"name": "general", "pipeline": pipe, "skip": ["task"], "set": {"finetune.trainer.max_steps": 2}}
    stages = load_ablation(_write(tmp_path, {"arms": [arm]})).arms[0].stages()
    assert [s.name for s in stages] == ["init", "general", "finetune"]
    finetune = stages[-1]
    assert finetune.args == ["--trainer.max_steps", "2"]
    start = stage_args(finetune, "R", "R/general/export", [s.name for s in stages], None, dry=True)
    assert start[:2] == ["--model.init_args.model_name_or_path", "R/general/export"]  # what the pipeline passes it
    # a set that replaces the argument naming a skipped stage lets it go (as the entropy arms' scorer does)
    arm = {"name": "a", "pipeline": pipe, "skip": ["general"], "set": {"task.wandb.name": "x"}}
    assert load_ablation(_write(tmp_path, {"arms": [arm]})).arms[0].stages()[1].args == ["--wandb.name", "x"]
    # `bertlab pipeline --skip task` gives the same stages
    assert skip_stages(load_pipeline(pipe)[1], ["task"]) == [s for s in load_pipeline(pipe)[1] if s.name != "task"]


@pytest.mark.parametrize(
    "arm, message",
    [
        ({"skip": ["domain"]}, r"arm a: skip names stage 'domain'; stages: \['init', 'general', 'task', 'finetune'\]"),
        ({"skip": ["init", "general", "task", "finetune"]}, "arm a: skip skips every stage"),
        ({"skip": ["general"]}, "arm a: skip skips 'general', which stage 'task' starts from or reads"),
        ({"skip": "task", "set": {"task.trainer.max_steps": 2}}, "arm a: skip skips 'task', which set changes"),
        ({"skip": [1]}, "arm a: skip: a stage name or a list of them, got"),
        ({"pipeline": None, "skip": ["task"]}, "arm a: set and skip change stages of a pipeline"),
    ],
)
def test_a_bad_skip_is_one_error_naming_the_file_and_the_arm(tmp_path, arm, message):
    path = _write(tmp_path, {"arms": [{"name": "a", "pipeline": _three_stage_pipeline(tmp_path), **arm}]})
    with pytest.raises(BertlabError, match=message) as info:
        load_ablation(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
