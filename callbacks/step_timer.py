"""``StepTimer``: wall time, tokens and model FLOP utilisation of every training step, written as JSON.

A step is timed from the end of the previous training batch to the end of this one, so it holds
everything the loop does for it: fetching and collating the batch (masking included), forward,
backward, the optimizer and the per-step bookkeeping. The first ``warmup`` steps are left out
(allocator growth, lazy initialisation).

Tokens are the batch's real (non-pad) tokens, ``attention_mask.sum()``. FLOPs per real token
follow Kaplan et al. 2020 / PaLM's MFU: 6 × the encoder's non-embedding parameters, plus
6 · 2 · layers · hidden · T for attention scores and values at the batch's width T (training =
3 × forward). The MLM head (transform + decoder) is counted on the rows it runs on, ``head_rows``:
the masked tokens for bertlab's sparse head, every position for HF's full logits
(``benchmarks/hf_anchors.py`` shares ``summarise_steps``); a classifier's head is negligible. MFU = achieved FLOP/s ÷
``peak_tflops`` (the device's dense peak at the run's precision; no MFU when it is not given).

    --trainer.callbacks+=callbacks.step_timer.StepTimer --trainer.callbacks.output_path=steps.json
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import pytorch_lightning as pl
import torch

from bertlab.core.files import atomic_path


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def rss_mb() -> float | None:
    """This process's resident set size now, in MiB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 2**10 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def encoder_flops_per_token(config, width: float) -> float:
    """Training FLOPs per token of a BERT-family encoder at sequence width ``width``."""
    h, layers = config.hidden_size, config.num_hidden_layers
    ffn = getattr(config, "intermediate_size", 4 * h)
    per_layer = 4 * h * h + 2 * h * ffn  # Q, K, V, output projections and the two FFN matrices
    attention = 2 * layers * h * width  # scores and weighted values
    return 6 * layers * per_layer + 6 * attention


def summarise_steps(steps: list[dict], warmup: int, config=None, peak_tflops: float | None = None) -> dict:
    """The JSON of a timed run: ``steps`` as recorded (seconds, tokens, rows, width, and ``head_rows``, the rows
    the MLM head ran on), the first ``warmup`` left out; FLOPs from the model's ``config`` when given."""
    timed = steps[warmup:]
    seconds = sum(s["seconds"] for s in timed)
    out = {"timed_steps": len(timed), "warmup_steps": min(warmup, len(steps)), "peak_rss_mb": peak_rss_mb()}
    out["threads"] = torch.get_num_threads()
    if not timed or seconds <= 0:
        return out
    out |= {"seconds": seconds, "min_step_s": min(s["seconds"] for s in timed), "steps": timed}
    if all("tokens" in s for s in timed):
        tokens = sum(s["tokens"] for s in timed)
        out |= {"tokens": tokens, "tokens_per_s": tokens / seconds}
        out["samples_per_s"] = sum(s["rows"] for s in timed) / seconds
        if config is not None and hasattr(config, "num_hidden_layers"):
            flops = sum(s["tokens"] * encoder_flops_per_token(config, s["width"]) for s in timed)
            head = config.hidden_size * (config.hidden_size + config.vocab_size)  # MLM transform + decoder
            flops += sum(6 * s.get("head_rows", 0) * head for s in timed)
            out["model_tflops_per_s"] = flops / seconds / 1e12
            if peak_tflops:
                out["mfu"] = out["model_tflops_per_s"] / peak_tflops
    return out


class StepTimer(pl.Callback):
    def __init__(self, output_path: str | None = None, warmup: int = 5, peak_tflops: float | None = None):
        """
        Args:
            output_path: where to write the JSON (rank 0; default ``<default_root_dir>/step_times.json``).
            warmup: steps left out at the start.
            peak_tflops: the device's dense peak (TFLOP/s) at the run's precision, for MFU.
        """
        self.output_path, self.warmup, self.peak_tflops = output_path, warmup, peak_tflops
        self.steps: list[dict] = []
        self._last: float | None = None
        self.at_start: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # data set up, model and optimizer built: what is resident now is carried through training
        self.at_start = {"start_rss_mb": rss_mb(), "start_peak_rss_mb": peak_rss_mb()}
        self.steps, self._last = [], time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        labels = batch.get("labels") if isinstance(batch, dict) else None
        step = {"seconds": now - self._last}
        if mask is not None:
            step |= {"tokens": int(mask.sum()), "rows": int(mask.shape[0]), "width": int(mask.shape[-1])}
        if labels is not None and labels.dim() == 2:
            step["predicted"] = step["head_rows"] = int((labels != -100).sum())  # the sparse head's rows
        self.steps.append(step)
        self._last = now

    def summary(self, pl_module) -> dict:
        model = getattr(pl_module, "model", None) or getattr(pl_module, "encoder", None)
        out = summarise_steps(self.steps, self.warmup, getattr(model, "config", None), self.peak_tflops)
        return out | self.at_start

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        out = self.summary(pl_module)
        path = self.output_path or os.path.join(trainer.default_root_dir, "step_times.json")
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(out, f, indent=1)
