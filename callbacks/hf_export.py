"""``HFExport``: after fit, write the best checkpoint as a ``save_pretrained`` directory.

The directory holds the model (with ``id2label``/``label2id`` in its config for classifiers),
the tokenizer, ``bertlab_export.json`` (which checkpoint, which step, which metric) and the model
card ``README.md`` (``callbacks.model_card``: every stage that made the model, the recipe, the data,
the metrics). The write is atomic: a temporary sibling directory is filled and then renamed into
place, so a crash never leaves a half-written export for the next stage to load. Testing the
exported checkpoint adds its test metrics to the card (the file replaced atomically).
"""

from __future__ import annotations

import json
import os

import pytorch_lightning as pl
import torch

from bertlab.core.faults import fault_point
from bertlab.core.files import atomic_path
from bertlab.core.hf_loading import quiet_transformers
from callbacks import model_card

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
        with open(os.path.join(tmp, model_card.CARD), "w", encoding="utf-8") as f:
            f.write(model_card.render(model_card.build(module, info)))
        fault_point("export")


def add_test_metrics(directory: str, checkpoint: str | None, metrics: dict) -> bool:
    """Put ``metrics`` into the card of the export in ``directory`` when that export holds ``checkpoint``'s
    weights (the one tested); True when the card was rewritten."""
    card = model_card.read_card(directory)
    path = os.path.join(directory, EXPORT_INFO)
    if card is None or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        exported = json.load(f).get("checkpoint")
    if os.path.abspath(exported or "") != os.path.abspath(checkpoint or "") or not metrics:
        return False
    card["stages"][-1]["test_metrics"] = metrics
    with atomic_path(os.path.join(directory, model_card.CARD)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(model_card.render(card))
    return True


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

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Testing the exported weights (the pipeline's ``test: true``, or ``trainer.test`` after fit) puts the
        test metrics into the export's card."""
        directory = self.exported_to or self.target(trainer)
        if trainer.is_global_zero and os.path.isdir(directory):
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            add_test_metrics(directory, trainer.ckpt_path, metrics)
        trainer.strategy.barrier("hf_export_card")

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
