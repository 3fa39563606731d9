"""The pre-flight check: everything a run's configuration says that can be checked before any model loads.

``check_run(subcommand, config)`` runs in the CLI after the config is parsed and before anything is
instantiated (``fit``, ``validate``, ``test``, ``predict``; so for every pipeline stage and ablation arm too):

* outputs: ``trainer.default_root_dir``, ``export.dirpath``, ``predictions.output_path`` and ``data.cache_dir``
  are writable and not under a file;
* settings: hyperparameters in range (``lr > 0``, ``batch_size >= 1``, ...) and no conflicting ones
  (a built-in ``splits.source`` together with ``train_file``; ``predict`` without anything to predict);
* the model directory: its config, tokenizer and weights load (a corrupt ``model.safetensors`` is named), and
  ``data.max_length`` fits its ``max_position_embeddings``;
* ``--ckpt_path``: exists and loads with ``torch.load(weights_only=True)`` (``bertlab.core.hf_loading``'s
  ``check_checkpoint``; the CLI calls it earlier than the rest, as it parses the path, because Lightning reads the
  checkpoint before any hook).

``sweep_outputs`` then removes what a killed run left there (half-written exports, cache temporaries).

The data itself is checked where it is read (``datamodules.sources``, ``datamodules.splits``, the data modules:
empty and header-only files, one class, unseen labels, tokenizer coverage), which the CLI does while it builds
the data module, still before the model. Each problem is a ``BertlabError``: one line, exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bertlab.core.errors import BertlabError
from bertlab.core.files import sweep_debris
from bertlab.core.hf_loading import check_model_files
from bertlab.core.models import load_tokenizer

# Lightning resolves these itself (the last / best checkpoint of the run, SLURM's requeue checkpoint).
SPECIAL_CKPTS = ("last", "best", "hpc", "registry")

# (dotted key, test, what the value must be); a key the config does not have is skipped.
RANGES: list[tuple[str, Callable[[float], bool], str]] = [
    ("model.init_args.lr", lambda v: v > 0, "> 0"),
    ("model.init_args.weight_decay", lambda v: v >= 0, ">= 0"),
    ("model.init_args.warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.init_args.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("data.init_args.max_length", lambda v: v >= 2, ">= 2"),
    ("data.init_args.loader.batch_size", lambda v: v >= 1, ">= 1"),
    ("data.init_args.loader.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("data.init_args.loader.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.init_args.loader.pad_to_multiple_of", lambda v: v >= 1, ">= 1"),
    ("data.init_args.val_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.init_args.splits.val_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.init_args.splits.test_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.init_args.max_unk_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("trainer.max_epochs", lambda v: v == -1 or v >= 1, ">= 1 (or -1: no limit)"),
    ("trainer.max_steps", lambda v: v == -1 or v >= 1, ">= 1 (or -1: no limit)"),
    ("trainer.accumulate_grad_batches", lambda v: v >= 1, ">= 1"),
    ("trainer.gradient_clip_val", lambda v: v >= 0, ">= 0"),
    ("trainer.devices", lambda v: v == -1 or v >= 1, ">= 1 (or -1: all)"),
]


def lookup(config: dict, key: str):
    """``config[a][b][c]`` for ``"a.b.c"``; None when absent or null (jsonargparse may hand null over as "None")."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node in ("None", "null") else node


def is_pending(path: str, pending: tuple[str, ...]) -> bool:
    """``path`` does not exist yet but lies under a folder that an earlier pipeline stage writes."""
    full = os.path.abspath(os.path.expanduser(path))
    return not os.path.exists(full) and any(full.startswith(os.path.abspath(p) + os.sep) for p in pending)


def check_run(subcommand: str, config: dict, pending: tuple[str, ...] = ()) -> None:
    """Every check on a parsed stage config (a plain dict, LightningCLI's layout); raises ``BertlabError``.
    Paths under ``pending`` that do not exist yet (what earlier pipeline stages will write) are not checked."""
    check_ranges(config)
    check_conflicts(subcommand, config)
    check_outputs(subcommand, config)
    for split in ("train", "val", "test", "predict"):
        path = lookup(config, f"data.init_args.splits.{split}_file")
        if isinstance(path, str) and not os.path.exists(path) and not is_pending(path, pending):
            raise BertlabError(f"data file {path!r} does not exist (data.splits.{split}_file)")
    model_dir = lookup(config, "model.init_args.model_name_or_path")
    if isinstance(model_dir, str) and not is_pending(model_dir, pending):
        check_model_dir(model_dir, lookup(config, "data.init_args.max_length"))


def check_ranges(config: dict) -> None:
    for key, ok, must in RANGES:
        value = lookup(config, key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not ok(value):
            raise BertlabError(f"--{key.replace('.init_args', '')} must be {must}, got {value}")


def check_conflicts(subcommand: str, config: dict) -> None:
    splits = lookup(config, "data.init_args.splits") or {}
    source, train_file = (
        lookup(config, "data.init_args.splits.source"),
        lookup(config, "data.init_args.splits.train_file"),
    )
    if source is not None and train_file is not None:
        raise BertlabError(
            f"data.splits.source {source!r} conflicts with train_file {train_file!r}: a built-in source "
            "brings its own training data; drop one of them"
        )
    if subcommand == "predict" and isinstance(splits, dict) and "predict_file" in splits:
        split = lookup(config, "data.init_args.predict_split") or "predict"
        if split == "predict" and not lookup(config, "data.init_args.splits.predict_file"):
            raise BertlabError(
                "predict has nothing to predict: set --data.splits.predict_file (or --data.predict_split train)"
            )


def output_paths(subcommand: str, config: dict) -> list[tuple[str, str, bool]]:
    """(what, path, is a directory) of every place this run writes to."""
    out = [("trainer.default_root_dir", config.get("trainer", {}).get("default_root_dir") or os.getcwd(), True)]
    if subcommand == "fit" and lookup(config, "export.dirpath"):
        out.append(("export.dirpath", lookup(config, "export.dirpath"), True))
    if subcommand == "predict" and lookup(config, "predictions.output_path"):
        out.append(("predictions.output_path", lookup(config, "predictions.output_path"), False))
    if lookup(config, "data.init_args.cache_dir"):
        out.append(("data.cache_dir", lookup(config, "data.init_args.cache_dir"), True))
    return out


def check_outputs(subcommand: str, config: dict) -> None:
    for what, path, is_dir in output_paths(subcommand, config):
        check_writable(str(path), what, is_dir)


def sweep_outputs(subcommand: str, config: dict) -> list[str]:
    """Remove what killed runs left beside this run's outputs (``bertlab.core.files.sweep_debris``): half-written
    exports and predictions, and temporaries in every folder of the cache."""
    removed = []
    for what, path, _ in output_paths(subcommand, config):
        path = os.path.abspath(os.path.expanduser(str(path)))
        if what == "data.cache_dir":
            folders = [path] + [e.path for e in os.scandir(path) if e.is_dir()] if os.path.isdir(path) else []
            removed += [r for folder in folders for r in sweep_debris(folder)]
        elif what != "trainer.default_root_dir":
            removed += sweep_debris(os.path.dirname(path), os.path.basename(path))
    return removed


def check_writable(path: str, what: str, is_dir: bool) -> None:
    """``path`` can be created or written: not under a file, not a file where a directory goes, writable."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path):
        if is_dir and not os.path.isdir(path):
            raise BertlabError(f"{what} {path!r} is a file, not a directory; choose another path or remove the file")
        if not is_dir and os.path.isdir(path):
            raise BertlabError(f"{what} {path!r} is a directory; give a file path")
        if not os.access(path if is_dir else os.path.dirname(path), os.W_OK):
            raise BertlabError(f"{what} {path!r} is not writable; choose another path or fix its permissions")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BertlabError(f"{what} {path!r} is under a file ({parent!r}); choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BertlabError(f"{what} {path!r} cannot be created: {parent!r} is not writable")


def check_model_dir(name_or_path: str, max_length: int | None) -> None:
    """The config, tokenizer and weights of a model directory load (``check_model_files``, the check every
    ``from_pretrained`` runs); ``max_length`` fits its positions."""
    _, config = check_model_files(name_or_path)
    load_tokenizer(name_or_path)
    positions = config.get("max_position_embeddings")
    if isinstance(max_length, int) and isinstance(positions, int):
        # RoBERTa-style models start positions after the padding index
        usable = positions - 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else positions
        if max_length > usable:
            raise BertlabError(
                f"data.max_length {max_length} is longer than the model {name_or_path!r} can take "
                f"(max_position_embeddings {positions}, {usable} usable); set --data.max_length {usable} or less"
            )
