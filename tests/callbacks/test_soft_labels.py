"""``SoftLabelWriter``: one row per training example even under 2-rank DDP, and the whole
self-distillation chain (teacher fit -> dump with its checkpoint -> student fit) through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from bertlab.cli import main
from bertlab.pipeline_spec import load_pipeline
from callbacks.soft_labels import gather_predictions
from datamodules.soft_label_file import load_soft_labels
from datamodules.sources import text_fingerprint
from tests.bertlab.cli_helpers import QUIET

ROOT = Path(__file__).resolve().parents[2]


def test_gather_keeps_each_id_once_in_id_order():
    preds = [
        {"idx": torch.tensor([3, 0]), "probs": torch.tensor([[0.1, 0.9], [0.8, 0.2]])},
        {"idx": torch.tensor([1, 3]), "probs": torch.tensor([[0.5, 0.5], [0.1, 0.9]])},
    ]
    idx, probs = gather_predictions(SimpleNamespace(world_size=1, is_global_zero=True), preds)
    np.testing.assert_array_equal(idx, [0, 1, 3])
    np.testing.assert_allclose(probs, [[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]])
    assert probs.dtype == np.float32


def _env() -> dict:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _data_args(tiny_bert_dir, train, val, cache) -> list[str]:
    return [
        "--config",
        str(ROOT / "tests/configs/tiny_test.yaml"),
        "--model.init_args.model_name_or_path",
        tiny_bert_dir,
        "--data.init_args.splits.train_file",
        train,
        "--data.init_args.splits.val_file",
        val,
        "--data.init_args.cache_dir",
        cache,
    ]


def test_soft_labels_are_dumped_exactly_once_per_example_under_ddp_spawn(tiny_bert_dir, tiny_csvs, tmp_path):
    # 101 training examples on 2 ranks: the DistributedSampler repeats one to make 51 + 51.
    train = tmp_path / "train.csv"
    pd.read_csv(tiny_csvs["train"]).iloc[:101].to_csv(train, index=False)
    out = tmp_path / "dump"
    cmd = [
        sys.executable,
        "-m",
        "bertlab.cli",
        "predict",
        *_data_args(tiny_bert_dir, str(train), tiny_csvs["val"], str(tmp_path / "cache")),
        "--config",
        str(ROOT / "configs/recipes/soft_label_dump.yaml"),
        "--data.init_args.loader.eval_batch_size",
        "8",
        "--trainer.strategy",
        "ddp_spawn",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.default_root_dir",
        str(out),
        *QUIET,
    ]
    proc = subprocess.run(cmd, cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out / "soft_labels.npz") as z:
        idx, probs = z["idx"], z["probs"]
        assert str(z["split"]) == "train" and list(z["labels"]) == ["neg", "pos"]
        assert str(z["data_fingerprint"]) == text_fingerprint(pd.read_csv(train)[["text"]])
    np.testing.assert_array_equal(idx, np.arange(101))  # every train id, exactly once
    assert probs.shape == (101, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the student's data module accepts the file as is
    assert load_soft_labels(str(out / "soft_labels.npz"), pd.read_csv(train), ["neg", "pos"]).shape == (101, 2)


def test_teacher_dump_student_chain_through_the_cli(tiny_bert_dir, tiny_csvs, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = _data_args(tiny_bert_dir, tiny_csvs["train"], tiny_csvs["val"], str(tmp_path / "cache"))
    short = [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        *QUIET,
    ]
    teacher = tmp_path / "teacher"
    assert (
        main(
            [
                "fit",
                *data,
                *short,
                "--trainer.default_root_dir",
                str(teacher),
                "--export.dirpath",
                str(teacher / "export"),
            ]
        )
        == 0
    )
    ckpt = next(teacher.rglob("*.ckpt"))
    dump = tmp_path / "dump"
    assert (
        main(
            [
                "predict",
                *data,
                "--config",
                str(ROOT / "configs/recipes/soft_label_dump.yaml"),
                *QUIET,
                "--trainer.default_root_dir",
                str(dump),
                "--ckpt_path",
                str(ckpt),
            ]
        )
        == 0
    )
    with np.load(dump / "soft_labels.npz") as z:
        assert len(z["idx"]) == 160  # the val file is separate, so nothing is cut from train
    student = tmp_path / "student"
    assert (
        main(
            [
                "fit",
                *data,
                *short,
                "--data.init_args.soft_labels_file",
                str(dump / "soft_labels.npz"),
                "--model.init_args.distill.alpha",
                "0.9",
                "--trainer.default_root_dir",
                str(student),
                "--export.dirpath",
                str(student / "export"),
            ]
        )
        == 0
    )
    assert (student / "export" / "config.json").is_file()


@pytest.mark.parametrize("name,start", [("self_distill", "none"), ("snownlp_self_distill", "none")])
def test_self_distill_pipeline_files_are_well_formed(name, start):
    root, stages = load_pipeline(str(ROOT / f"configs/pipelines/{name}.yaml"))
    teacher, dump, student = stages[-3:]
    assert [s.name for s in stages[-3:]] == ["teacher", "dump", "student"]
    assert dump.subcommand == "predict" and dump.args[dump.args.index("--ckpt_path") + 1] == "{ckpt:teacher}"
    assert teacher.init_from == dump.init_from == student.init_from == start  # the student starts where the teacher did
    assert teacher.config[0] == student.config[0]
    assert any("{dir:dump}/soft_labels.npz" in a for a in student.args)
