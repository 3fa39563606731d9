"""``torchrun --nproc_per_node 2 -m bertlab ...`` with ``--trainer.strategy ddp`` on CPU (gloo): Lightning
joins the processes torchrun started. The export, the test predictions, the predictions CSV and the soft
labels are each written once by rank 0, one row per example, although the DistributedSampler pads."""

import glob
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from tests.bertlab.cli_helpers import ROOT, cli_env, tiny_args

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = cli_env()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "-m", "bertlab", *args, *DDP]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_cpu_ranks_write_every_output_once(tiny_bert_dir, tiny_csvs, tmp_path):
    odd = {}
    for split, n in (("train", 101), ("test", 39)):  # odd sizes: 2 ranks need a padded repeat
        odd[split] = str(tmp_path / f"{split}.csv")
        pd.read_csv(tiny_csvs[split]).iloc[:n].to_csv(odd[split], index=False)
    root = str(tmp_path / "run")
    args = tiny_args(tiny_bert_dir, {**tiny_csvs, **odd}, root, str(tmp_path / "cache"))
    proc = _torchrun("fit", *args, "--trainer.max_epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(root, "export", "model.safetensors"))
    assert [os.path.basename(p) for p in glob.glob(os.path.join(root, "export*"))] == ["export"]  # no rank's twin
    ckpt = glob.glob(os.path.join(root, "checkpoints", "*.ckpt"))
    assert len(ckpt) == 1

    proc = _torchrun("test", *args, "--ckpt_path", ckpt[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(os.path.join(root, "test_predictions.npz")) as z:
        assert z["idx"].tolist() == list(range(39))
        assert z["labels"].tolist() == [0 if label == "neg" else 1 for label in pd.read_csv(odd["test"])["label"]]

    dump = ["--config", os.path.join(ROOT, "configs/recipes/soft_label_dump.yaml")]  # predict over train
    proc = _torchrun("predict", *args, *dump, "--ckpt_path", ckpt[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(os.path.join(root, "soft_labels.npz")) as z:
        assert z["idx"].tolist() == list(range(101)) and z["probs"].shape == (101, 2)
    pred = pd.read_csv(os.path.join(root, "predictions.csv"))
    assert pred["text"].tolist() == pd.read_csv(odd["train"])["text"].tolist()  # each once, in input order
    assert np.allclose(
        pred[["prob_neg", "prob_pos"]].to_numpy(), np.load(os.path.join(root, "soft_labels.npz"))["probs"]
    )
