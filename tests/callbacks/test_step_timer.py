"""``StepTimer``: which steps it times, the tokens it counts, the FLOPs it credits, and the JSON it writes."""

from __future__ import annotations

import json
import types

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from callbacks.step_timer import StepTimer, encoder_flops_per_token

CONFIG = types.SimpleNamespace(hidden_size=8, num_hidden_layers=2, intermediate_size=16, vocab_size=50)


class Tiny(pl.LightningModule):
    """Batches of token ids with padding and MLM-style labels; ``model.config`` as an HF model has."""

    def __init__(self):
        super().__init__()
        self.model = nn.Embedding(50, 8)
        self.model.config = CONFIG

    def training_step(self, batch, batch_idx):
        return self.model(batch["input_ids"]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches(n: int) -> list[dict]:
    out = []
    for i in range(n):
        mask = torch.zeros(4, 6, dtype=torch.long)
        mask[:, : 3 + i % 3] = 1  # 12, 16, 20 real tokens
        labels = torch.full((4, 6), -100)
        labels[:, 1] = 7  # 4 predicted tokens a batch
        out.append({"input_ids": torch.randint(0, 50, (4, 6)), "attention_mask": mask, "labels": labels})
    return out


def fit(tmp_path, timer: StepTimer, n: int = 7):
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), max_steps=n, callbacks=[timer], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Tiny(), DataLoader(batches(n), batch_size=None))
    return json.load(open(timer.output_path or tmp_path / "step_times.json"))


def test_leaves_out_warmup_and_counts_real_tokens(tmp_path):
    out = fit(tmp_path, StepTimer(warmup=2))
    assert out["timed_steps"] == 5 and out["warmup_steps"] == 2
    assert [s["tokens"] for s in out["steps"]] == [20, 12, 16, 20, 12]  # batches 2..6
    assert out["tokens"] == 80 and all(s["predicted"] == 4 and s["width"] == 6 for s in out["steps"])
    assert abs(out["tokens_per_s"] - 80 / out["seconds"]) < 1e-9
    assert abs(out["samples_per_s"] - 20 / out["seconds"]) < 1e-9
    assert out["min_step_s"] == min(s["seconds"] for s in out["steps"]) and out["peak_rss_mb"] > 10
    # resident memory when training starts (what the data and model keep), and the peak up to then
    assert 10 < out["start_rss_mb"] <= out["start_peak_rss_mb"] + 1 and out["start_peak_rss_mb"] <= out["peak_rss_mb"]


def test_model_flops_and_mfu(tmp_path):
    out = fit(tmp_path, StepTimer(output_path=str(tmp_path / "t.json"), warmup=2, peak_tflops=1e-9))
    per_token = encoder_flops_per_token(CONFIG, 6)
    assert per_token == 6 * 2 * (4 * 64 + 2 * 8 * 16) + 6 * 2 * 2 * 8 * 6
    flops = 80 * per_token + 6 * 4 * 5 * 8 * (8 + 50)  # + the MLM head on 4 predicted rows per timed step
    assert abs(out["model_tflops_per_s"] - flops / out["seconds"] / 1e12) < 1e-15
    assert abs(out["mfu"] - out["model_tflops_per_s"] / 1e-9) < 1e-9


def test_no_timed_steps_writes_what_it_knows(tmp_path):
    out = fit(tmp_path, StepTimer(warmup=10), n=3)
    assert out["timed_steps"] == 0 and "tokens_per_s" not in out
