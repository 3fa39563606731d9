"""``HFExport``: after fit, write the best checkpoint as a ``save_pretrained`` directory.

The directory holds the model (with ``id2label``/``label2id`` in its config for classifiers),
the tokenizer and ``bertlab_export.json`` (which checkpoint, which step, which metric). The
write is atomic: a temporary sibling directory is filled and then renamed into place, so a
crash never leaves a half-written export for the next stage to load.
"""

from __future__ import annotations

import json
import os

import pytorch_lightning as pl
import torch

from bertlab.core.files import atomic_path
from bertlab.core.hf_loading import quiet_transformers

EXPORT_INFO = "bertlab_export.json"


def atomic_export(module: pl.LightningModule, tokenizer, directory: str, info: dict, knowledge=None) -> None:
    """Export ``module`` (which must have ``export_pretrained(dir)``) into ``directory`` atomically.

    ``knowledge``: the data's knowledge spec, for a module that fuses knowledge vectors (it records where they
    come from, and ships what computes them).
    """
    with atomic_path(directory, directory=True) as tmp:
        with quiet_transformers():
            native = module.export_pretrained(tmp, **({"knowledge": knowledge} if knowledge is not None else {}))
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, EXPORT_INFO), "w") as f:
            json.dump({**info, "hf_native": bool(native)}, f, indent=1, default=str)


def tokenization(dm) -> dict:
    """How the data cut texts into tokens (``max_length``, ``truncation``, ``head_tokens``): ``bertlab predict
    --model`` cuts new texts the same way."""
    hparams = getattr(dm, "hparams", None) or {}
    kept = {k: hparams[k] for k in ("max_length", "truncation", "head_tokens") if k in hparams}
    return {"tokenization": kept} if "max_length" in kept else {}


class HFExport(pl.Callback):
    def __init__(self, dirpath: str | None = None, use_best: bool = True):
        """
        Args:
            dirpath: where the export goes (default: ``<default_root_dir>/export``).
            use_best: export the best checkpoint of the ``ModelCheckpoint`` callback (else the final weights).
        """
        self.dirpath = dirpath
        self.use_best = use_best
        self.exported_to: str | None = None

    def target(self, trainer: pl.Trainer) -> str:
        return self.dirpath or os.path.join(trainer.default_root_dir, "export")

    def export(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, directory: str | None = None, info: dict | None = None
    ) -> str:
        """Export the current weights (rank 0 writes; every rank returns the path)."""
        directory = directory or self.target(trainer)
        if trainer.is_global_zero:
            dm = trainer.datamodule
            tokenizer = getattr(dm, "tokenizer", None) if dm is not None else None
            info = {"global_step": trainer.global_step, **(info or {}), **tokenization(dm)}
            atomic_export(pl_module, tokenizer, directory, info, getattr(dm, "knowledge", None))
        trainer.strategy.barrier("hf_export")
        return directory

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A downstream probe, when present, chooses the checkpoint (the best-probe step, not the last).
        from callbacks.probe import DownstreamProbe

        probe = next((c for c in trainer.callbacks if isinstance(c, DownstreamProbe) and c.best_model_path), None)
        ckpt = probe or trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if self.use_best else ""
        info = {"checkpoint": best or None}
        if best:
            info.update(
                monitor=ckpt.monitor,
                best_score=float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
                best_step=getattr(ckpt, "best_step", None),
            )
            current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            pl_module.load_state_dict(torch.load(best, map_location=pl_module.device, weights_only=False)["state_dict"])
            try:
                self.exported_to = self.export(trainer, pl_module, info=info)
            finally:
                pl_module.load_state_dict(current)
        else:
            self.exported_to = self.export(trainer, pl_module, info=info)
