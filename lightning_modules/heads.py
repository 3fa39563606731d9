"""Pooling heads: turn an encoder's hidden states into one vector per example.

Every head takes ``hidden_states`` — the tuple HF returns with ``output_hidden_states=True``:
the embedding output followed by each of the L layers, each ``[batch, seq, hidden]`` — and
the ``attention_mask``, and returns ``[batch, out_dim]``. The classifier picks one by name
and never looks inside it.
"""

from __future__ import annotations

import torch
from torch import nn

from bertlab.errors import BertlabError


class Head(nn.Module):
    out_dim: int


class ClsHead(Head):
    """The last layer's first token through dense + tanh: BERT's pooler, so the export is HF-native."""

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()
        self.out_dim = hidden_size

    def init_from_pooler(self, pooler: nn.Module) -> None:
        """Start from the checkpoint's pooler weights when it has them, as HF's classifiers do."""
        self.dense.load_state_dict(pooler.dense.state_dict())

    def forward(self, hidden_states, attention_mask):
        return self.activation(self.dense(hidden_states[-1][:, 0]))


class MeanHead(Head):
    """Masked mean over the last layer's tokens (padding excluded)."""

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.out_dim = hidden_size

    def forward(self, hidden_states, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
        return (hidden_states[-1] * mask).sum(1) / mask.sum(1).clamp_min(1.0)


HEADS: dict[str, type[Head]] = {"cls": ClsHead, "mean": MeanHead}


def build_head(name: str, hidden_size: int, num_layers: int, **kwargs) -> Head:
    if name not in HEADS:
        raise BertlabError(f"unknown head {name!r}; known heads: {', '.join(sorted(HEADS))}")
    return HEADS[name](hidden_size, num_layers, **kwargs)
