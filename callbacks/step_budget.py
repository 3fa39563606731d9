"""``StepBudget``: stop further pre-training after a fixed number of optimiser steps, and export
the encoder at milestone steps on the way.

Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?", §5.4) found about 100k
further pre-training steps best on IMDb; more overfit the in-domain text. Their curve was read
off checkpoints of one run, which is what the milestones give: each milestone ``N`` is written as
a ``save_pretrained`` directory ``<export_dir>/step-N`` (with the tokenizer and
``bertlab_export.json``), so a probe or a fine-tuning stage can start from any of them.

The budget counts ``trainer.global_step`` (optimiser steps, so gradient accumulation is counted
once per update) and ignores epochs. It does not shorten the LR schedule: that spans
``trainer.max_steps`` (or the epochs), and a warning says so when the two differ.
"""

from __future__ import annotations

import os

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from bertlab.core.errors import BertlabError
from callbacks.hf_export import atomic_export


class StepBudget(pl.Callback):
    def __init__(self, max_steps: int = 100_000, milestones: list[int] | None = None, export_dir: str | None = None):
        """
        Args:
            max_steps: stop once ``trainer.global_step`` reaches this (Sun et al. 2019: ~100k).
            milestones: steps (each in 1..max_steps) at which the current model is exported.
            export_dir: where ``step-N`` directories go (default: ``<default_root_dir>/milestones``).
        """
        milestones = list(milestones or [])
        if not isinstance(max_steps, int) or max_steps < 1:
            raise BertlabError(f"StepBudget: max_steps must be a positive integer, got {max_steps!r}")
        bad = [m for m in milestones if not isinstance(m, int) or m < 1]
        if bad:
            raise BertlabError(f"StepBudget: milestones must be positive integers, got {bad}")
        beyond = [m for m in milestones if m > max_steps]
        if beyond:
            raise BertlabError(
                f"StepBudget: milestone(s) {beyond} lie beyond max_steps {max_steps}; training stops before them. "
                "Drop them or raise max_steps"
            )
        self.max_steps = max_steps
        self.milestones = sorted(set(milestones))
        self.export_dir = export_dir
        self.exported: dict[int, str] = {}  # milestone step -> directory
        self.stopped_at: int | None = None
        self._done_until = 0  # milestones at or below this step were passed before this fit (resume)

    def milestone_dir(self, trainer: pl.Trainer, step: int) -> str:
        return os.path.join(self.export_dir or os.path.join(trainer.default_root_dir, "milestones"), f"step-{step}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._done_until = trainer.global_step
        horizon = trainer.max_steps if trainer.max_steps != -1 else trainer.estimated_stepping_batches
        if horizon != self.max_steps:
            rank_zero_warn(
                f"StepBudget stops at step {self.max_steps} but the LR schedule spans {horizon} steps "
                f"(trainer.max_steps={trainer.max_steps}); set trainer.max_steps: {self.max_steps} for a schedule "
                "that ends with the budget"
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        for m in self.milestones:
            if self._done_until < m <= step and m not in self.exported:
                self.exported[m] = self._export(trainer, pl_module, m)
        if step >= self.max_steps and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_at = step
            rank_zero_info(
                f"StepBudget: stopping at global step {step}: the budget of {self.max_steps} optimiser steps is spent "
                f"(epoch {trainer.current_epoch}; Sun et al. 2019 found ~100k further pre-training steps best)"
            )

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, milestone: int) -> str:
        directory = self.milestone_dir(trainer, milestone)
        if trainer.is_global_zero:
            tokenizer = getattr(trainer.datamodule, "tokenizer", None) if trainer.datamodule is not None else None
            atomic_export(
                pl_module,
                tokenizer,
                directory,
                {
                    "global_step": trainer.global_step,
                    "milestone": milestone,
                    "epoch": trainer.current_epoch,
                    "max_steps": self.max_steps,
                },
            )
            rank_zero_info(f"StepBudget: exported step {trainer.global_step} to {directory}")
        return directory
