"""Exact resume with dropout on: a fit resumed from the checkpoint it saved at step N (what ``kill -9`` leaves)
ends with the very weights of the uninterrupted fit, mid-epoch and at an epoch's end (``RNGState``)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bertlab.cli import main
from tests.bertlab.cli_helpers import tiny_args

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
