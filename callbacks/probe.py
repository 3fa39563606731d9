"""``DownstreamProbe``: during further pre-training, measure how good the encoder is for the
labelled task with a linear probe, keep the best weights, and stop when it stops improving.

A linear probe (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes") is a logistic regression on frozen, pooled last hidden states. It is cheap next to a
fine-tune and tracks whether MLM steps still help the task; the MLM loss keeps falling long after
they stop helping (Sun et al. 2019, §5.4: too many further pre-training steps hurt).

Every ``every_n_steps`` optimiser steps, rank 0 encodes a fixed, stratified subset of the task's
train split (at most ``max_train_examples``) and its whole val split, fits the probe and logs
``probe/acc`` (val accuracy). When that improves by more than ``min_delta`` the module's weights
are saved to ``<default_root_dir>/probe/best.ckpt`` (weights only). ``best_model_path``,
``best_model_score``, ``best_step`` and ``monitor`` have the names of Lightning's
``ModelCheckpoint``'s, so an exporter can take the best-probe weights the same way. After
``patience`` probes in a row without improvement training stops (with ``stop``); rank 0's
decision is broadcast, so every rank stops at the same step.

The probe itself (its examples, the pooled features, the regression) is ``callbacks.linear_probe``. Its task is
``task`` when given (a ``class_path``), else the training data module's ``task_data`` (``MLMDataModule`` builds it
from its own ``task``, whose val/test texts the MLM corpus already excludes), encoded with the training data
module's tokenizer. The module must offer ``hidden_states(input_ids, attention_mask, token_type_ids)``
(``MaskedLM`` does).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from callbacks.linear_probe import fit_logreg, pool, probe_examples

PROBES = ("logreg",)
POOLINGS = ("mean", "cls")
MONITOR = "probe/acc"
HISTORY = "probe_history.json"


class PatienceTracker:
    """The stopping rule alone: best score so far and how many updates in a row failed to beat it."""

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "max"):
        if mode not in ("max", "min"):
            raise BertlabError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.wait = 0

    def update(self, step: int, score: float) -> tuple[bool, bool]:
        """(improved, should_stop) after seeing ``score`` at ``step``.

        Improved means better than the best by more than ``min_delta``.
        """
        sign = 1.0 if self.mode == "max" else -1.0
        improved = self.best_score is None or sign * (score - self.best_score) > self.min_delta
        if improved:
            self.best_score, self.best_step, self.wait = score, step, 0
        else:
            self.wait += 1
        return improved, self.wait >= self.patience


class DownstreamProbe(pl.Callback):
    def __init__(
        self,
        every_n_steps: int = 1000,
        patience: int = 3,
        task: pl.LightningDataModule | None = None,
        probe: str = "logreg",
        pooling: str = "mean",
        max_train_examples: int = 2000,
        min_delta: float = 0.0,
        stop: bool = True,
        batch_size: int = 64,
        seed: int = 0,
        at_start: bool = False,
    ):
        """
        Args:
            every_n_steps: probe after every N optimiser steps.
            patience: stop after this many probes in a row without improvement.
            task: a labelled data module, e.g. ``class_path: datamodules.classification.ClassificationDataModule``
                (default: the MLM data module's ``task_data``); needs labelled train and val splits.
            probe: ``logreg`` (standardised features, logistic regression).
            pooling: ``mean`` over real tokens or ``cls`` (the first token) of the last hidden states.
            max_train_examples: the probe is fit on at most this many train examples (a fixed stratified subset).
            min_delta: an improvement must exceed this to count.
            stop: stop training when patience runs out (else only track the best).
            batch_size: encoding batch size.
            seed: the subset's and the probe's seed.
            at_start: also probe the starting weights (step 0), so that the curve has its origin and the
                unchanged model can win.
        """
        for name, value in (
            ("every_n_steps", every_n_steps),
            ("patience", patience),
            ("max_train_examples", max_train_examples),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise BertlabError(f"DownstreamProbe: {name} must be an integer >= 1, got {value!r}")
        if probe not in PROBES:
            raise BertlabError(f"DownstreamProbe: unknown probe {probe!r}; probes: {', '.join(PROBES)}")
        if pooling not in POOLINGS:
            raise BertlabError(f"DownstreamProbe: unknown pooling {pooling!r}; poolings: {', '.join(POOLINGS)}")
        self.every_n_steps, self.task, self.probe, self.pooling = every_n_steps, task, probe, pooling
        self.max_train_examples, self.stop, self.batch_size, self.seed = max_train_examples, stop, batch_size, seed
        self.at_start = at_start
        self.tracker = PatienceTracker(patience, min_delta, mode="max")
        self.monitor = MONITOR
        self.best_model_path = ""
        self.history: dict[int, float] = {}
        self.data: dict | None = None  # split -> (token rows, label ids), plus the collator; built once in setup
        self._last_step = -1

    @property
    def best_model_score(self) -> torch.Tensor | None:
        return None if self.tracker.best_score is None else torch.tensor(self.tracker.best_score)

    @property
    def best_step(self) -> int | None:
        return self.tracker.best_step

    # ------------------------------------------------------------ data

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.data is not None:
            return
        if not callable(getattr(pl_module, "hidden_states", None)):
            raise BertlabError(
                "DownstreamProbe needs a module with an encoder's `hidden_states` (MaskedLM); "
                f"got {type(pl_module).__name__}"
            )
        self.data = self.build_data(trainer.datamodule, pl_module)

    def build_data(self, datamodule, pl_module) -> dict:
        task = self.task if self.task is not None else getattr(datamodule, "task_data", None)
        if task is None:
            raise BertlabError(
                "DownstreamProbe needs a labelled `task` (a data module such as "
                "datamodules.classification.ClassificationDataModule with source: fine_food); "
                "the training data module has none either"
            )
        return probe_examples(task, getattr(datamodule, "tokenizer", None), self.max_train_examples, self.seed)

    # ------------------------------------------------------------ probing

    @torch.no_grad()
    def encode(self, trainer: pl.Trainer, pl_module: pl.LightningModule, rows: list[dict]) -> np.ndarray:
        feats = []
        with trainer.precision_plugin.forward_context():
            for lo in range(0, len(rows), self.batch_size):
                batch = {
                    k: v.to(pl_module.device) for k, v in self.data["collate"](rows[lo : lo + self.batch_size]).items()
                }
                hidden = pl_module.hidden_states(
                    batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
                )
                feats.append(pool(hidden, batch["attention_mask"], self.pooling).float().cpu())
        return torch.cat(feats).numpy()

    def score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        """``probe/acc`` of the current encoder: frozen, eval mode, then every submodule's mode restored."""
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            (tr_rows, tr_y), (va_rows, va_y) = self.data["train"], self.data["val"]
            x_train, x_val = self.encode(trainer, pl_module, tr_rows), self.encode(trainer, pl_module, va_rows)
        finally:
            for m, was in modes.items():
                m.training = was
        return fit_logreg(x_train, tr_y, x_val, va_y, self.seed)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step or step % self.every_n_steps:
            return  # gradient accumulation: one probe per optimiser step
        self.probe_now(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_start and trainer.global_step == 0 and 0 not in self.history:
            self.probe_now(trainer, pl_module)

    def probe_now(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Probe the current weights at this step; keep them when they are the best so far; stop on patience."""
        step = self._last_step = trainer.global_step
        score = self.score(trainer, pl_module) if trainer.is_global_zero else None
        score = trainer.strategy.broadcast(score, src=0)
        improved, patience_out = self.tracker.update(step, score)  # same inputs on every rank, same decision
        self.history[step] = score
        value = torch.tensor(score)
        trainer.callback_metrics[MONITOR] = value
        trainer.callback_metrics["probe/best_acc"] = self.best_model_score
        for logger in trainer.loggers:
            logger.log_metrics({MONITOR: score, "probe/best_acc": self.tracker.best_score}, step=step)
        if improved:
            self.best_model_path = os.path.join(trainer.default_root_dir, "probe", "best.ckpt")
            trainer.save_checkpoint(self.best_model_path, weights_only=True)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            self.write_history(trainer)
        rank_zero_info(
            f"DownstreamProbe: step {step} probe/acc {score:.4f} (best {self.tracker.best_score:.4f} at step "
            f"{self.best_step}"
            f"{', improved' if improved else f', {self.tracker.wait} without improvement'})"
        )
        if patience_out and self.stop:
            trainer.should_stop = True
            rank_zero_info(
                f"DownstreamProbe: stopping at step {step}: {self.tracker.patience} probes without improvement"
            )

    def write_history(self, trainer: pl.Trainer) -> None:
        path = os.path.join(trainer.default_root_dir, HISTORY)
        payload = {
            "monitor": MONITOR,
            "best_step": self.best_step,
            "best_score": self.tracker.best_score,
            "best_model_path": self.best_model_path,
            "history": {str(k): v for k, v in self.history.items()},
        }
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(payload, f, indent=1)

    # ------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        t = self.tracker
        return {
            "history": dict(self.history),
            "best_score": t.best_score,
            "best_step": t.best_step,
            "wait": t.wait,
            "best_model_path": self.best_model_path,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(k): v for k, v in state["history"].items()}
        self.tracker.best_score, self.tracker.best_step, self.tracker.wait = (
            state["best_score"],
            state["best_step"],
            state["wait"],
        )
        self.best_model_path = state["best_model_path"]
