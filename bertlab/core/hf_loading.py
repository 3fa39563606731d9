"""Loading HF models from local directories, quietly and with clear errors.

``check_model_files`` is the one model-directory check (``config.json`` is a JSON object, the weights' index or
header reads, no tensor data is loaded); ``from_pretrained`` runs it before every load, so ``fit``, ``validate``,
``test``, ``predict`` (with a checkpoint or ``--model``), a pipeline's ``init_from`` and the scorers all check the
same way. Loading errors of every kind (JSON, safetensors, pickle, a truncated zip) become one ``BertlabError``
that names the file. ``check_checkpoint`` does the same for a Lightning checkpoint or a ``pytorch_model.bin``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle

from bertlab.core.errors import BertlabError
from bertlab.core.models import resolve_model_dir


@contextlib.contextmanager
def quiet_transformers():
    """Silence the load report (unused MLM-head weights, progress bars) that stage hand-overs trigger by design."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


def read_model_config(name_or_path: str, what: str = "model") -> dict:
    """The ``config.json`` of a model directory (``resolve_model_dir``), as a dict; a broken one names the file."""
    config_file = os.path.join(resolve_model_dir(name_or_path, what), "config.json")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BertlabError(f"{config_file}: not a readable model config ({_first_line(e)})") from None
    if not isinstance(config, dict):
        raise BertlabError(f"{config_file}: not a model config (a JSON object)")
    return config


def check_weights(path: str) -> None:
    """The weight file of a model directory is there and its index/header reads (no tensor data is loaded)."""
    safetensors = os.path.join(path, "model.safetensors")
    binary = os.path.join(path, "pytorch_model.bin")
    sharded = [f for f in os.listdir(path) if f.endswith((".safetensors.index.json", ".bin.index.json"))]
    if os.path.isfile(safetensors):
        from safetensors import safe_open

        try:
            with safe_open(safetensors, framework="pt") as f:
                names = list(f.keys())
                for name in names:
                    f.get_slice(name).get_shape()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise BertlabError(
                f"{safetensors}: corrupt or truncated weights ({_first_line(e)}); export or copy the model again"
            ) from None
        if not names:
            raise BertlabError(f"{safetensors}: holds no tensors; export or copy the model again")
    elif os.path.isfile(binary):
        check_checkpoint(binary, what="model weights")
    elif sharded:
        for index in sharded:
            read_json_file(os.path.join(path, index), "a weight index")
    else:
        raise BertlabError(
            f"model directory {path!r} has no weights (model.safetensors or pytorch_model.bin); "
            "is it a save_pretrained directory?"
        )


def read_json_file(path: str, what: str):
    """A JSON file of a model directory; a broken one is a ``BertlabError`` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise BertlabError(f"{path}: not a readable {what} ({_first_line(e)})") from None


def check_model_files(name_or_path: str, what: str = "model") -> tuple[str, dict]:
    """(directory, config) of a model directory whose config and weights read; else a ``BertlabError``."""
    config = read_model_config(name_or_path, what)
    path = resolve_model_dir(name_or_path, what)
    check_weights(path)
    return path, config


def check_checkpoint(path: str, what: str = "--ckpt_path") -> dict:
    """``path`` exists and loads as plain tensors and containers (``torch.load(weights_only=True)``); returns
    what it holds, memory-mapped (the tensors are not read), for a caller that needs its hyperparameters."""
    import torch

    if not os.path.isfile(path):
        raise BertlabError(f"{what} {path!r} does not exist" + (" (it is a directory)" if os.path.isdir(path) else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - a damaged zip, a pickle of arbitrary objects, a foreign format
        raise BertlabError(
            f"{what} {path!r} does not load as a checkpoint of tensors ({_first_line(e)}); "
            "point it at a checkpoint that bertlab saved"
        ) from None


def load_errors() -> tuple[type[BaseException], ...]:
    """What a damaged model directory makes ``from_pretrained`` raise: I/O, JSON, pickle, safetensors, torch's
    zip reader (RuntimeError), a truncated stream (EOFError)."""
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


def from_pretrained(auto_class, name_or_path: str, *, what: str = "model", **kwargs):
    """``auto_class.from_pretrained`` on a local directory whose files pass ``check_model_files``;
    returns (model, missing_keys)."""
    path, _ = check_model_files(name_or_path, what)
    try:
        with quiet_transformers():
            model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    except load_errors() as e:
        raise BertlabError(
            f"cannot load a model from {path!r} with {auto_class.__name__} ({_first_line(e)}); "
            "export or copy the model again"
        ) from None
    return model, set(info.get("missing_keys", ()))


def register_output_capture(module) -> None:
    """Re-register HF models' output capturing in this process.

    transformers 5 records ``hidden_states`` through a per-process registry filled when a model
    is constructed. A model unpickled in a ``ddp_spawn`` worker was never constructed there, so
    it would silently return ``hidden_states=None``. Call this from ``configure_model``.
    """
    try:
        from transformers.modeling_utils import PreTrainedModel
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # older transformers: no registry, nothing to do
        return
    for sub in module.modules():
        if isinstance(sub, PreTrainedModel) and getattr(sub, "_can_record_outputs", None):
            _CAN_RECORD_REGISTRY[sub] = sub._can_record_outputs
