"""The shipped selective pipeline, and the same without Model_b as the entropy arms run it, end to end on a tiny
BERT (their stage wiring, caches and skips), and their bad input through the real CLI."""

from __future__ import annotations

import json
import os

import pytest

from bertlab.pipeline import run_pipeline
from tests.bertlab.cli_helpers import QUIET, ROOT, run_cli

CHECKPOINT = (
    '[{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"monitor": "%s", "mode": "max"}}]'
)


def _quiet(root_cache: str) -> list[str]:
    return [*QUIET, "--trainer.accelerator", "cpu", "--data.init_args.cache_dir", root_cache]


def _overrides(tiny_bert_dir: str, csvs: dict, cache: str) -> dict[str, list[str]]:
    files = {"train_file": csvs["train"], "val_file": csvs["val"]}
    classify = [
        "--model.init_args.model_name_or_path",
        tiny_bert_dir,
        "--data.init_args.splits",
        json.dumps({"source": None, **files, "test_file": csvs["test"]}),  # instead of the config's fine_food
        "--data.init_args.max_length",
        "32",
        "--trainer.max_epochs",
        "3",
        "--model.init_args.lr",
        "0.003",
        "--trainer.callbacks",
        CHECKPOINT % "val/acc",
        *_quiet(cache),
    ]
    task = json.dumps({"source": None, **files})  # the configs' task is fine_food
    return {
        "model0": classify,
        "model_b": [
            "--model.init_args.model_name_or_path",
            tiny_bert_dir,
            "--model.init_args.lr",
            "0.003",
            "--data.init_args.task",
            task,
            "--data.init_args.max_length",
            "32",
            "--data.init_args.delta",
            "0.05",
            "--trainer.max_epochs",
            "3",
            "--trainer.callbacks",
            CHECKPOINT % "val/f1",
            *_quiet(cache),
        ],
        "mlm": [
            "--model.init_args.model_name_or_path",
            tiny_bert_dir,
            "--data.init_args.task",
            task,
            "--data.init_args.max_length",
            "32",
            "--data.init_args.loader.batch_size",
            "8",
            "--trainer.max_steps",
            "3",
            "--trainer.callbacks",
            "[]",
            *_quiet(cache),
        ],
        "finetune": classify,
    }


def _stage(root, name) -> dict:
    with open(os.path.join(root, "summary.json")) as f:
        return {s["name"]: s for s in json.load(f)["stages"]}[name]


ENTROPY = [  # the `entropy` arm of configs/ablations/fine_food_masking.yaml: Model_0 scores, no Model_b
    "--data.init_args.masker",
    json.dumps(
        {
            "class_path": "datamodules.maskers.EntropyMasker",
            "init_args": {"mlm_probability": 0.15, "temperature": 0.25, "fill": "random"},
        }
    ),
    "--data.init_args.scorer",
    '{"kind": "entropy", "model": "{export:model0}", "divergence": "entropy"}',
]


@pytest.mark.parametrize("recipe", ["selective", "entropy"])
def test_shipped_pipeline_runs_and_skips_when_unchanged(recipe, tiny_bert_dir, tiny_csvs, tmp_path):
    path = os.path.join(ROOT, "configs/pipelines/fine_food_selective.yaml")
    cache, root = str(tmp_path / "cache"), str(tmp_path / "run")
    overrides = _overrides(tiny_bert_dir, tiny_csvs, cache)
    skip = []
    if recipe == "entropy":
        del overrides["model_b"]
        overrides["mlm"] = overrides["mlm"] + ENTROPY
        skip = ["model_b"]
    summary = run_pipeline(path, root, overrides={k: list(v) for k, v in overrides.items()}, skip=skip)
    names = ["model0", "model_b", "mlm", "finetune"] if recipe == "selective" else ["model0", "mlm", "finetune"]
    assert [s["name"] for s in summary["stages"]] == names
    assert all(s["status"] == "ran" for s in summary["stages"])
    assert "test/acc" in _stage(root, "finetune")["metrics"]["test"]
    scores = [f for d, _, fs in os.walk(os.path.join(cache, "tokens")) for f in fs if f.startswith("scores-")]
    assert len(scores) == 1
    if recipe == "selective":
        assert "test/f1" in _stage(root, "model_b")["metrics"]["test"]  # Model_b's token-level F1, in a JSON
        assert len(os.listdir(os.path.join(cache, "token_labels"))) == 2  # the labels (.npz) and their summary
    again = run_pipeline(path, root, overrides=overrides, skip=skip)
    assert all(s["status"] == "skipped (unchanged)" for s in again["stages"])


def test_bad_delta_and_bad_scorer_through_the_cli(tiny_bert_dir, tiny_csvs, tmp_path):
    task = json.dumps({"source": None, "train_file": tiny_csvs["train"], "val_file": tiny_csvs["val"]})
    base = [
        "fit",
        "--config",
        os.path.join(ROOT, "configs/token_tagger/fine_food.yaml"),
        "--model.init_args.model_name_or_path",
        tiny_bert_dir,
        "--data.init_args.task",
        task,
        "--data.init_args.max_length",
        "32",  # the tiny model has 64 positions (the pre-flight check refuses the config's 128 first)
        "--trainer.callbacks",
        "[]",
        "--trainer.default_root_dir",
        str(tmp_path / "r"),
        *_quiet(str(tmp_path / "cache")),
    ]
    proc = run_cli(*base, "--data.init_args.model0", tiny_bert_dir, "--data.init_args.delta", "1.5")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        "bertlab: error: delta (δ of the buffer rule) must be in (0, 1), got 1.5"
    ), proc.stderr[-2000:]
    proc = run_cli(*base, "--data.init_args.model0", tiny_bert_dir)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("bertlab: error: the Model_0 ") and "is not a sequence classifier" in last
    assert not os.path.exists(tmp_path / "r" / "export")
