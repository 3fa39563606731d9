"""``RNGState``: every random stream of a fit goes into its checkpoints and comes back on resume.

Lightning's checkpoints hold the weights, the optimiser and the loops, but not the random state, so a
resumed run draws other dropout masks (``lightning_modules.cpu_kernels`` draws them from torch's global
generator), another shuffle and other MLM masks than the run it continues. Saved here: Python's, NumPy's,
torch's CPU and CUDA generators, the train sampler's own generator where it has one
and the masker's (``datamodules.maskers``), all as tensors so that the checkpoint still loads with
``torch.load(weights_only=True)``. They are put back when training starts, before the first batch is drawn.

The global streams (dropout) are put back at the start of every training step to what they were at the end of
the step before, so nothing that runs between two steps moves them: a validation (its DataLoader draws a base
seed), the next epoch's DataLoader iterator (another draw, made before or after ``on_train_start`` depending on
where Lightning resumes), a checkpoint. A checkpoint saved after a validation at an epoch's end (``ModelCheckpoint``
on ``val/acc``) then resumes on the numbers of the run itself; before, its resumed run drew other dropout masks,
because the next epoch's iterator drew from the restored stream in one run and before it in the other.
The data's order is a function of (seed, epoch) (``datamodules.samplers``), never of a generator's state.

Resuming is then bit-identical on CPU, with ``num_workers: 0``, to the uninterrupted run, from every checkpoint
bertlab writes: ``ModelCheckpoint`` at an epoch's end (best on ``val/acc``, ``last``), every N training steps,
``interrupted-step=N.ckpt`` (``GracefulStop``), and mid-epoch with either sampler, which skips what the
interrupted pass drew (``resume_at``).
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
        state = _capture(self._trainer)
        if self._after_step is not None:  # the global streams as the next step will see them
            state.update({k: self._after_step[k] for k in ("python", "numpy", "torch", "cuda")})
        return _to_tensors(state)

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
            sampler.resume_at = done * trainer.train_dataloader.batch_size  # the pass goes on where it stopped
        _apply(trainer, self._pending, ("data",))  # the sampler and masker before the pass's first batch is drawn
        # As if the checkpoint's step had just ended here: the first step starts on its global streams, and a
        # validation that Lightning runs before it (resuming before an epoch's validation) ends on them too.
        self._after_step, self._pending = self._pending, None

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if self._after_step is not None:  # what ran since the last step (a validation, a new iterator) drew
            _apply(trainer, self._after_step, ("global",))

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self._after_step = _capture(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._after_step is not None:
            _apply(trainer, self._after_step)
