"""``RNGState``: every random stream of a fit goes into its checkpoints and comes back on resume.

Lightning's checkpoints hold the weights, the optimiser and the loops, but not the random state, so a
resumed run draws other dropout masks (``lightning_modules.cpu_kernels`` draws them from torch's global
generator), another shuffle and other MLM masks than the run it continues. Saved here: Python's, NumPy's,
torch's CPU and CUDA generators, the train sampler's own generator (``datamodules.samplers.EpochSampler``)
and the masker's (``datamodules.maskers``), all as tensors so that the checkpoint still loads with
``torch.load(weights_only=True)``. They are put back when training starts, before the first batch is drawn.

Validation inside a fit draws too (a DataLoader's base seed); those draws
would make a checkpoint saved before a validation (every N steps) resume on other numbers than the run
itself. So the streams are snapshot after every training step and put back when a validation ends: the
training stream does not depend on when, or whether, validation runs.

Resuming is then bit-identical on CPU to the uninterrupted run: from an epoch's end, and mid-epoch where the
train sampler can skip what the interrupted pass drew (``LengthGroupedSampler.resume_at``, the default for
classification and MLM). Not exact mid-epoch: a plain shuffle (``group_by_length: false``).
"""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn


def _generators(trainer: pl.Trainer) -> dict[str, torch.Generator]:
    """The data's own generators: the train sampler's and the masker's, where there are such."""
    out = {}
    sampler = getattr(trainer.train_dataloader, "sampler", None)
    if isinstance(getattr(sampler, "generator", None), torch.Generator):
        out["sampler"] = sampler.generator
    masker = getattr(trainer.datamodule, "masker", None) if trainer.datamodule is not None else None
    if isinstance(getattr(masker, "generator", None), torch.Generator):
        out["masker"] = masker.generator
    return out


def _capture(trainer: pl.Trainer) -> dict:
    """Every stream's state, as the libraries hand it out."""
    masker = getattr(trainer.datamodule, "masker", None) if trainer.datamodule is not None else None
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in _generators(trainer).items()},
        "masker_stream": getattr(masker, "_stream", None),
    }


def _apply(trainer: pl.Trainer, state: dict, parts: tuple[str, ...] = ("global", "data")) -> None:
    """Put ``state`` back: the global generators and/or the data's own (sampler, masker)."""
    if "global" in parts:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    if "data" not in parts:
        return
    generators = _generators(trainer)
    for name, saved in state["generators"].items():
        if name in generators:
            generators[name].set_state(saved)
    masker = getattr(trainer.datamodule, "masker", None) if trainer.datamodule is not None else None
    if state["masker_stream"] is not None and masker is not None:
        masker._stream = tuple(state["masker_stream"])


def _to_tensors(state: dict) -> dict:
    """The state in types that ``torch.load(weights_only=True)`` reads back."""
    version, internal, gauss_next = state["python"]
    _, keys, pos, has_gauss, gauss = state["numpy"]
    return {
        **state,
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss_next},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": (has_gauss, gauss)},
        "masker_stream": None if state["masker_stream"] is None else list(state["masker_stream"]),
    }


def _from_tensors(state: dict) -> dict:
    py, npy = state["python"], state["numpy"]
    return {
        **state,
        "python": (py["version"], tuple(py["state"].tolist()), py["gauss"]),
        "numpy": ("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], *npy["gauss"]),
    }


class RNGState(pl.Callback):
    def __init__(self):
        self._trainer: pl.Trainer | None = None
        self._pending: dict | None = None
        self._after_step: dict | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        if self._trainer is None:
            return {}
        return _to_tensors(_capture(self._trainer))

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = _from_tensors(state_dict) if state_dict else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._pending:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        done, sampler = progress.current.processed, getattr(trainer.train_dataloader, "sampler", None)
        if (
            trainer.fit_loop.restarted_mid_epoch
            and done
            and not progress.is_last_batch
            and hasattr(sampler, "resume_at")
        ):
            # Mid-epoch: the pass goes on where it stopped, and the streams come back once its first batch is
            # drawn (the interrupted run drew no new DataLoader iterator at that point).
            sampler.resume_at = done * trainer.train_dataloader.batch_size
            _apply(trainer, self._pending, ("data",))  # the masker before the pass's first batch is masked
            return
        _apply(trainer, self._pending)  # at an epoch's start: before the new pass draws its iterator
        self._pending = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if self._pending:
            _apply(trainer, self._pending, ("global",))
            self._pending = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self._after_step = _capture(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._after_step is not None:
            _apply(trainer, self._after_step)
