"""Newly initialised parameters under a pretrained encoder, and how they start training.

A fresh head's random gradients reach the pretrained encoder from the first step. MiniLM ships
without an MLM head, so every English MLM stage starts that way, as do classification heads with
many new parameters (``layer_cnn``, ``concat_*``, knowledge fusion). ``FreshStart`` holds the
remedies, each off by default:

* ``warmup_steps``: head warm-up, the linear-probing phase of LP-FT (Kumar et al. 2022). For the
  first N optimizer steps only the new parameters train. The other gradients are dropped after
  each backward, so AdamW skips those tensors: no update, no weight decay, no moments. An MLM
  head's decoder is tied to the word embeddings, so those train too (``warmup_extra``):
  otherwise the warm-up learns almost nothing (val perplexity 931 against 147 after 200 steps).
* ``lr_multiplier``: the new parameters' lr is ``lr · m`` throughout.
* ``reinit_layers`` k: re-initialise the top k encoder layers (Zhang et al. 2021, "Revisiting
  few-sample BERT fine-tuning"). They train as encoder layers, at the encoder's lr.

Every run logs how many parameters were newly initialised when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertlab.core.errors import BertlabError


@dataclass
class FreshStart:
    """How newly initialised parameters start training (see the module docstring)."""

    warmup_steps: int = 0
    lr_multiplier: float = 1.0
    reinit_layers: int = 0

    def __post_init__(self) -> None:
        if int(self.warmup_steps) < 0:
            raise BertlabError(f"fresh.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not float(self.lr_multiplier) > 0:
            raise BertlabError(f"fresh.lr_multiplier must be > 0, got {self.lr_multiplier}")
        if int(self.reinit_layers) < 0:
            raise BertlabError(f"fresh.reinit_layers must be >= 0, got {self.reinit_layers}")


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers (BERT/RoBERTa/ELECTRA ``encoder.layer``, DistilBERT
    ``transformer.layer``)."""
    base = getattr(encoder, "base_model", encoder)
    for path in ("encoder.layer", "transformer.layer"):
        node = base
        for attr in path.split("."):
            node = getattr(node, attr, None)
        if isinstance(node, nn.ModuleList):
            return node
    raise BertlabError(f"cannot find the layer stack of {type(encoder).__name__} to re-initialise")


def reinit_top_layers(encoder: nn.Module, k: int) -> list[str]:
    """Re-initialise the top ``k`` layers with the model's own initialiser; returns their parameter names."""
    if k == 0:
        return []
    layers = encoder_layers(encoder)
    if k > len(layers):
        raise BertlabError(f"fresh.reinit_layers {k} exceeds the encoder's {len(layers)} layers")
    init = getattr(encoder, "_init_weights", None)
    if init is None:
        raise BertlabError(f"{type(encoder).__name__} has no _init_weights to re-initialise layers with")
    names = []
    owner = {id(p): n for n, p in encoder.named_parameters()}
    for layer in layers[len(layers) - k :]:
        for tensor in list(layer.parameters()) + list(layer.buffers()):
            tensor._is_hf_initialized = False  # transformers 5's init functions skip tensors flagged as loaded
        with torch.no_grad():
            layer.apply(init)
        names += [owner[id(p)] for p in layer.parameters()]
    return names


def fresh_parameters(module: nn.Module, names: set[str]) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of ``module`` named in ``names`` (names, not objects, survive pickling to
    DDP workers)."""
    return {n: p for n, p in module.named_parameters() if n in names}


def drop_frozen_grads(module: nn.Module, trainable: set[str]) -> None:
    """Head warm-up: clear the gradient of every parameter not named in ``trainable``."""
    for n, p in module.named_parameters():
        if n not in trainable:
            p.grad = None


def scale_fresh_lr(groups: list[dict], fresh: dict[str, nn.Parameter], multiplier: float) -> list[dict]:
    """Split each AdamW group so that its fresh parameters get ``lr · multiplier``."""
    if multiplier == 1.0:
        return groups
    fresh = {id(p) for p in fresh.values()}
    out = []
    for group in groups:
        new = [p for p in group["params"] if id(p) in fresh]
        old = [p for p in group["params"] if id(p) not in fresh]
        if old:
            out.append({**group, "params": old})
        if new:
            out.append({**group, "params": new, "lr": group["lr"] * multiplier, "name": group["name"] + "_fresh"})
    return out


def describe(fresh: dict[str, nn.Parameter], warmup_steps: int, what: str) -> str:
    """One log line: how many parameters are new, in which modules, and the warm-up."""
    count = sum(p.numel() for p in fresh.values())
    if not fresh:
        return f"bertlab: {what}: no newly initialised parameters"
    roots = sorted({".".join(n.split(".")[:2]) for n in fresh})
    shown = ", ".join(roots[:5]) + (f" and {len(roots) - 5} more" if len(roots) > 5 else "")
    warm = f"; head warm-up: {warmup_steps} steps" if warmup_steps else "; no head warm-up"
    return f"bertlab: {what}: {count:,} newly initialised parameters in {len(fresh)} tensors ({shown}){warm}"
