"""Exact resume with dropout on: a fit resumed from any checkpoint bertlab writes ends with the very weights of
the uninterrupted fit, classification and MLM (``RNGState``; ``--ckpt_path`` on an MLM checkpoint):

* every N training steps (what ``kill -9`` leaves), mid-epoch and at an epoch's end;
* ``ModelCheckpoint`` on the monitored metric (``val/acc``, ``val/loss``), saved after a validation, and its
  ``last.ckpt`` (the issue's 6-epoch fit resumed from the ``val/acc`` one ended 0.002 away);
* ``interrupted-step=N.ckpt``, which ``GracefulStop`` saves on SIGTERM;
* mid-epoch with the plain shuffle (``group_by_length: false``) as with the length-grouped one."""

from __future__ import annotations

import functools
import json
import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file

from bertlab.cli import main
from tests.bertlab.cli_helpers import MLM_CONFIG, QUIET, tiny_args
from tests.conftest import make_texts

CHECKPOINT = "pytorch_lightning.callbacks.ModelCheckpoint"


def every(n: int) -> dict:
    """A checkpoint every ``n`` training steps, all kept (``epoch=E-step=S.ckpt``)."""
    return {"class_path": CHECKPOINT, "init_args": {"monitor": None, "every_n_train_steps": n, "save_top_k": -1}}


def monitored(metric: str, mode: str) -> dict:
    """configs/base.yaml's checkpoint on the validation metric, every one kept, and ``last.ckpt``."""
    init = {"monitor": metric, "mode": mode, "save_top_k": -1, "save_last": True, "filename": "best-{epoch}-{step}"}
    return {"class_path": CHECKPOINT, "init_args": init}


class SignalAt(pl.Callback):
    """Sends this process SIGTERM at the end of training step ``step``, as a scheduler's kill would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def signal_at(step: int) -> dict:
    return {"class_path": f"{__name__}.SignalAt", "init_args": {"step": step}}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The tensors that differ (an empty list: bit-identical)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


SHUFFLES = {"grouped": "true", "plain shuffle": "false"}  # --data.loader.group_by_length


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(task, shuffle, fit)``: the uninterrupted fit's weights and the folder of a fit stopped by SIGTERM,
    built once per (task, shuffle)."""
    built = {}

    def get(task: str, shuffle: str, fit) -> tuple:
        if (task, shuffle) not in built:
            base = tmp_path_factory.mktemp(f"rng_{task}")
            weights = fit(base / "straight", shuffle)
            fit(base / "killed", shuffle, stop=True)
            built[task, shuffle] = base, weights
        return built[task, shuffle]

    return get


# ---- classification: 160 examples / 16 = 10 steps an epoch, 2 epochs; validation at each epoch's end


def _fit(model, csvs, root, shuffle="grouped", *extra, stop=False) -> dict[str, torch.Tensor] | None:
    callbacks = [every(5), monitored("val/acc", "max"), *([signal_at(15)] if stop else [])]
    args = tiny_args(model, csvs, str(root), str(root.parent / "cache"))
    args += ["--export.use_best", "false", "--trainer.callbacks", json.dumps(callbacks), "--trainer.max_epochs", "2"]
    args += ["--data.loader.group_by_length", SHUFFLES[shuffle], *extra]
    assert main(["fit", *args]) == (128 + signal.SIGTERM if stop else 0)
    return None if stop else load_file(str(root / "export" / "model.safetensors"))


@pytest.mark.parametrize(
    "shuffle, checkpoint",
    [
        ("grouped", "straight/epoch=0-step=5.ckpt"),  # every 5 steps: mid-epoch
        ("grouped", "straight/epoch=0-step=10.ckpt"),  # at the epoch's end, before its validation
        ("grouped", "straight/epoch=1-step=15.ckpt"),  # mid-second-epoch
        ("grouped", "killed/best-epoch=0-step=10.ckpt"),  # val/acc, after the validation
        ("grouped", "killed/last.ckpt"),  # epoch 0's end: the killed run stopped at step 15
        ("grouped", "killed/interrupted-step=15.ckpt"),  # GracefulStop's
        ("plain shuffle", "killed/best-epoch=0-step=10.ckpt"),
        ("plain shuffle", "killed/interrupted-step=15.ckpt"),  # mid-epoch
    ],
)
def test_resume_is_bit_identical(tiny_bert_dir, tiny_csvs, tmp_path, runs, shuffle, checkpoint):
    fit = functools.partial(_fit, tiny_bert_dir, tiny_csvs)
    _resumes_bit_identically(runs("classify", shuffle, fit), fit, tmp_path, shuffle, checkpoint, last_step=10)


def _resumes_bit_identically(run, fit, tmp_path, shuffle: str, checkpoint: str, last_step: int) -> None:
    """Resuming ``fit`` from ``checkpoint`` of ``run`` (its folder and uninterrupted weights) ends with the
    uninterrupted weights, bit for bit; the checkpoint holds the RNG states and the step its name says
    (``last_step`` for ``last.ckpt``)."""
    base, weights = run
    ckpt = base / checkpoint.replace("/", "/checkpoints/")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert any("RNGState" in key for key in saved["callbacks"])
    step = int(checkpoint.split("step=")[1].split(".")[0]) if "step=" in checkpoint else last_step
    assert saved["global_step"] == step
    resumed = fit(tmp_path / "resumed", shuffle, "--ckpt_path", str(ckpt))
    assert same(weights, resumed) == []


# ---- MLM: 95 training lines / 8 = 12 steps an epoch, 2 epochs; validation every 4 steps


def _mlm_fit(model, corpus, root, shuffle="grouped", *extra, stop=False) -> dict[str, torch.Tensor] | None:
    callbacks = [every(4), monitored("val/loss", "min"), *([signal_at(18)] if stop else [])]
    args = ["fit", "--config", MLM_CONFIG, "--model.init_args.model_name_or_path", model]
    args += ["--data.init_args.task", "null", "--data.init_args.corpus", f"[{corpus}]"]
    args += ["--data.init_args.max_length", "32", "--data.init_args.loader.batch_size", "8"]
    args += ["--data.init_args.loader.group_by_length", SHUFFLES[shuffle]]
    args += ["--data.init_args.cache_dir", str(root.parent / "cache"), "--trainer.accelerator", "cpu", *QUIET]
    args += ["--trainer.max_steps", "-1", "--trainer.max_epochs", "2", "--trainer.val_check_interval", "4"]
    args += ["--trainer.callbacks", json.dumps(callbacks), "--trainer.default_root_dir", str(root)]
    assert main([*args, "--export.use_best", "false", *extra]) == (128 + signal.SIGTERM if stop else 0)
    return None if stop else load_file(str(root / "export" / "model.safetensors"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlm_corpus") / "corpus.txt"
    path.write_text("\n".join(make_texts(100, seed=9)[0]) + "\n")
    return path


@pytest.mark.parametrize(
    "shuffle, checkpoint",
    [
        ("grouped", "straight/epoch=0-step=4.ckpt"),  # every 4 steps: mid-epoch
        ("grouped", "straight/epoch=0-step=12.ckpt"),  # at the epoch's end
        ("grouped", "killed/best-epoch=0-step=12.ckpt"),  # val/loss, after the epoch's last validation
        ("grouped", "killed/last.ckpt"),  # saved at step 16's validation: mid-epoch
        ("grouped", "killed/interrupted-step=18.ckpt"),
        ("plain shuffle", "killed/best-epoch=0-step=12.ckpt"),
        ("plain shuffle", "killed/interrupted-step=18.ckpt"),  # mid-epoch
    ],
)
def test_mlm_resume_is_bit_identical(tiny_bert_dir, tmp_path, runs, corpus, shuffle, checkpoint):
    """Masks come from the masker's own generator."""
    fit = functools.partial(_mlm_fit, tiny_bert_dir, corpus)
    _resumes_bit_identically(runs("mlm", shuffle, fit), fit, tmp_path, shuffle, checkpoint, last_step=16)
