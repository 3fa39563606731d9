"""SIGTERM / SIGINT in the middle of ``bertlab fit``: a resumable checkpoint, exit code 128 + signum and one line
saying how to resume; the resumed run carries on from that step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bertlab.cli import main
from tests.bertlab.cli_helpers import ROOT, tiny_args


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_fit_saves_a_checkpoint_to_resume_from(tiny_bert_dir, tiny_csvs, tmp_path, signum):
    root = tmp_path / "run"
    args = tiny_args(tiny_bert_dir, tiny_csvs, str(root), str(tmp_path / "cache"))
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bertlab.cli", "fit", *args, "--trainer.max_epochs", "1000"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:  # Lightning says this once the fit (and its signal handlers) has started
            if "train_dataloader" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signum)
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"bertlab: stopped by {signal.Signals(signum).name}; saved "), last
    ckpt = last.rsplit("--ckpt_path ", 1)[1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    step, epoch = state["global_step"], state["epoch"]
    assert step > 0 and "optimizer_states" in state and "loops" in state
    assert not (root / "export").exists()  # an interrupted fit exports nothing

    resumed = main(["fit", *args, "--trainer.max_epochs", str(epoch + 2), "--ckpt_path", ckpt])
    assert resumed == 0
    info = (root / "export" / "bertlab_export.json").read_text()
    assert f'"global_step": {(epoch + 2) * 10}' in info  # 160 examples / 16 = 10 steps an epoch
