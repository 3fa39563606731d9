"""Loading HF models from local directories, quietly and with clear errors."""

from __future__ import annotations

import contextlib

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


def from_pretrained(auto_class, name_or_path: str, **kwargs):
    """``auto_class.from_pretrained`` on a local directory; returns (model, missing_keys)."""
    path = resolve_model_dir(name_or_path)
    try:
        with quiet_transformers():
            model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise BertlabError(
            f"cannot load a model from {name_or_path!r} with {auto_class.__name__}: {str(e).splitlines()[0]}"
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
