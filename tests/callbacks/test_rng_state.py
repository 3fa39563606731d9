"""Exact resume with dropout on: a fit resumed from the checkpoint it saved at step N (what ``kill -9`` leaves)
ends with the very weights of the uninterrupted fit, mid-epoch and at an epoch's end, classification and MLM
(``RNGState``; ``--ckpt_path`` on an MLM checkpoint)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from bertlab.cli import main
from tests.bertlab.cli_helpers import QUIET, ROOT, tiny_args
from tests.conftest import make_texts

# a checkpoint every 5 steps, all kept; 160 examples / 16 = 10 steps an epoch
EVERY_5 = json.dumps(
    [
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {"monitor": None, "every_n_train_steps": 5, "save_top_k": -1},
        }
    ]
)


def _fit(model, csvs, root, *extra) -> dict[str, torch.Tensor]:
    args = tiny_args(model, csvs, str(root), str(root.parent / "cache"))
    extra = ["--export.use_best", "false", "--trainer.callbacks", EVERY_5, "--trainer.max_epochs", "2", *extra]
    assert main(["fit", *args, *extra]) == 0
    return load_file(str(root / "export" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_dir, tiny_csvs, tmp_path_factory):
    root = tmp_path_factory.mktemp("rng") / "straight"
    return root, _fit(tiny_bert_dir, tiny_csvs, root)


@pytest.mark.parametrize("step", [5, 10, 15], ids=["mid-epoch", "epoch-boundary", "mid-second-epoch"])
def test_resume_is_bit_identical(tiny_bert_dir, tiny_csvs, tmp_path, uninterrupted, step):
    root, weights = uninterrupted
    ckpt = next((root / "checkpoints").glob(f"*-step={step}.ckpt"))
    assert any("RNGState" in key for key in torch.load(ckpt, map_location="cpu", weights_only=True)["callbacks"])
    resumed = _fit(tiny_bert_dir, tiny_csvs, tmp_path / "resumed", "--ckpt_path", str(ckpt))
    assert weights.keys() == resumed.keys()
    assert [k for k in resumed if not torch.equal(weights[k], resumed[k])] == []


MLM_CONFIG = os.path.join(ROOT, "configs/mlm/fine_food_tapt.yaml")


def _mlm_fit(model, corpus, root, *extra) -> dict[str, torch.Tensor]:
    every_4 = EVERY_5.replace('"every_n_train_steps": 5', '"every_n_train_steps": 4')
    args = ["fit", "--config", MLM_CONFIG, "--model.init_args.model_name_or_path", model]
    args += ["--data.init_args.task", "null", "--data.init_args.corpus", f"[{corpus}]"]
    args += ["--data.init_args.max_length", "32", "--data.init_args.loader.batch_size", "8"]
    args += ["--data.init_args.cache_dir", str(root.parent / "cache"), "--trainer.accelerator", "cpu", *QUIET]
    args += ["--trainer.max_steps", "-1", "--trainer.max_epochs", "2", "--trainer.val_check_interval", "4"]
    args += ["--trainer.callbacks", every_4, "--trainer.default_root_dir", str(root), "--export.use_best", "false"]
    assert main([*args, *extra]) == 0
    return load_file(str(root / "export" / "model.safetensors"))


@pytest.fixture(scope="module")
def mlm_uninterrupted(tiny_bert_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("mlm_rng")
    corpus = base / "corpus.txt"
    corpus.write_text("\n".join(make_texts(100, seed=9)[0]) + "\n")
    return corpus, base / "straight", _mlm_fit(tiny_bert_dir, corpus, base / "straight")


@pytest.mark.parametrize("step", [4, 12], ids=["mid-epoch", "epoch-boundary"])
def test_mlm_resume_is_bit_identical(tiny_bert_dir, tmp_path, mlm_uninterrupted, step):
    """Masks come from the masker's own generator, validated every 4 steps (12 steps an epoch)."""
    corpus, root, weights = mlm_uninterrupted
    ckpt = next((root / "checkpoints").glob(f"*-step={step}.ckpt"))
    resumed = _mlm_fit(tiny_bert_dir, corpus, tmp_path / "resumed", "--ckpt_path", str(ckpt))
    assert [k for k in resumed if not torch.equal(weights[k], resumed[k])] == []
