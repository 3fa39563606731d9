"""Nothing is written before a run's checks pass: LightningCLI's ``config.yaml`` waits for them, and what the
loggers created before a check failed is removed.

Lightning creates the loggers' folders (``ROOT/csv/version_N``) before it sets up the data module, restores a
checkpoint into the model (where a checkpoint with another label count is refused) and builds the dataloaders;
``SaveConfigCallback`` writes ``config.yaml`` in between. Every check of the data, the masker and the checkpoint
has run once the first batch is due: at ``on_train_start`` (``fit``) or ``on_{validation,test,predict}_start``.
``SaveConfigWhenChecked`` writes the config there, and on an exception before that point removes the entries
that appeared in the run's root and in its immediate folders since the run began (never the data cache).
"""

from __future__ import annotations

import contextlib
import os
import shutil

from pytorch_lightning.cli import SaveConfigCallback


def _entries(path: str) -> set[str] | None:
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _remove(path: str, keep: tuple[str, ...]) -> None:
    """Remove ``path``, except a kept path and the folders that lead to one."""
    if path in keep:
        return
    if os.path.isdir(path) and not os.path.islink(path) and any(k.startswith(path + os.sep) for k in keep):
        for name in os.listdir(path):
            _remove(os.path.join(path, name), keep)
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class Snapshot:
    """What a run's root and its immediate folders held when the run began, to remove what appeared since."""

    def __init__(self, root: str, keep: tuple[str, ...] = ()):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.keep = tuple(os.path.abspath(os.path.expanduser(k)) for k in keep)
        self.before = {self.root: _entries(self.root)}
        for name in self.before[self.root] or ():
            path = os.path.join(self.root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                self.before[path] = _entries(path)

    def undo(self) -> None:
        if self.before[self.root] is None:
            if os.path.isdir(self.root):
                _remove(self.root, self.keep)
            return
        for folder, before in self.before.items():
            now = _entries(folder) or set()
            for name in sorted(now - before):
                _remove(os.path.join(folder, name), self.keep)


class SaveConfigWhenChecked(SaveConfigCallback):
    """``SaveConfigCallback`` that writes once the run's checks have passed and undoes a failed start."""

    def __init__(self, parser, config, *args, **kwargs):
        super().__init__(parser, config, *args, **kwargs)
        cache = config.get("data.init_args.cache_dir")
        self.checked = False
        self.snapshot = Snapshot(config.get("trainer.default_root_dir") or os.getcwd(), (str(cache),) if cache else ())

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Deferred to ``_checked``."""

    def _checked(self, trainer, pl_module, stage: str) -> None:
        if not self.checked:
            self.checked = True
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module) -> None:
        self._checked(trainer, pl_module, "fit")

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._checked(trainer, pl_module, "validate")

    def on_test_start(self, trainer, pl_module) -> None:
        self._checked(trainer, pl_module, "test")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._checked(trainer, pl_module, "predict")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not self.checked and trainer.is_global_zero:
            for logger in trainer.loggers:  # let go of the files it holds open (W&B's offline run, CSV's metrics)
                with contextlib.suppress(Exception):
                    logger.finalize("failed")
            self.snapshot.undo()
