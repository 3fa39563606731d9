"""The model an MLM stage trains: an HF ``*ForMaskedLM`` loaded from a directory (a checkpoint without an MLM
head, such as MiniLM, gets a fresh one), or a new BERT built from scratch on a tokenizer's vocabulary
(``ScratchBert``: the Chinese char BERT of the 4-stage pipeline)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from torch import nn

from bertlab.core.errors import BertlabError
from bertlab.core.hf_loading import from_pretrained
from lightning_modules.cpu_kernels import use_cpu_kernels
from lightning_modules.mlm_objective import mlm_head_fn


@dataclass
class ScratchBert:
    """A new BERT whose vocabulary is a tokenizer's; unset fields keep ``BertConfig``'s defaults.

    Args:
        tokenizer: a model directory, or a tokenizer-only directory (e.g. a trained char vocabulary).
    """

    tokenizer: str
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None
    type_vocab_size: int | None = None
    hidden_act: str | None = None
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    layer_norm_eps: float | None = None
    initializer_range: float | None = None

    def config_fields(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "tokenizer" and v is not None}


def load_tokenizer_dir(name_or_path: str):
    """A tokenizer from a model directory or from a tokenizer-only directory (a trained char vocabulary)."""
    from transformers import AutoTokenizer

    from bertlab.core.models import is_model_dir, load_tokenizer

    path = os.path.expanduser(str(name_or_path))
    if is_model_dir(name_or_path):
        return load_tokenizer(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise BertlabError(
            f"from_scratch.tokenizer {name_or_path!r}: no tokenizer there ({type(e).__name__}); save one with "
            "tokenizer.save_pretrained"
        ) from None


def build_from_scratch(spec: ScratchBert) -> nn.Module:
    """A freshly initialised ``BertForMaskedLM`` whose vocabulary is the given tokenizer's."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = load_tokenizer_dir(spec.tokenizer)
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise BertlabError(f"from_scratch.tokenizer {spec.tokenizer!r} needs both a mask and a pad token")
    fields = spec.config_fields()
    try:
        return BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **fields))
    except ValueError as e:
        raise BertlabError(f"from_scratch: {str(e).splitlines()[0]}") from None


def load_mlm_model(
    model_name_or_path: str | None, from_scratch: ScratchBert | None = None
) -> tuple[nn.Module, set[str]]:
    """(an HF ``*ForMaskedLM`` in train mode, its missing keys): built from ``from_scratch`` if given,
    else loaded; a checkpoint without an MLM head (MiniLM) gets a fresh one, listed in the missing keys."""
    from transformers import AutoModelForMaskedLM

    if from_scratch is not None:
        model, missing = build_from_scratch(from_scratch), set()
    elif model_name_or_path is None:
        raise BertlabError(
            "give `model_name_or_path` (a model directory or `minilm`) or `from_scratch` (a tokenizer and a model size)"
        )
    else:
        model, missing = from_pretrained(AutoModelForMaskedLM, model_name_or_path)
    mlm_head_fn(model)  # unknown architectures fail here, at the edge
    return use_cpu_kernels(model.train()), missing  # from_pretrained leaves eval mode
