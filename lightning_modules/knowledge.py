"""Knowledge fusion: inject an external vector per example into a text classifier.

Two places to put it, chosen by name in config (``knowledge_fusion``):

* ``after_encoder`` — concatenate the vector with the pooled text vector before the
  classifier (Ostendorff et al. 2019, "Enriching BERT with Knowledge Graph Embeddings for
  Document Classification", arXiv:1909.08402, who concatenate metadata and author
  embeddings with BERT's output). The classifier's extra input columns are the fusion weights.
* ``embedding`` — project the vector to the hidden size and add it to the first token's
  input (word) embedding, before position/type embeddings and LayerNorm, so every layer
  can attend to it. Works with any encoder that accepts ``inputs_embeds``.

The vectors come from the data (``datamodules/knowledge_vectors.py``) as the batch key ``knowledge``.
"""

from __future__ import annotations

import torch
from torch import nn

from bertlab.core.errors import BertlabError


class AfterEncoderFusion(nn.Module):
    """[pooled ; knowledge]: widens the classifier's input by ``knowledge_dim``."""

    site = "after_encoder"

    def __init__(self, knowledge_dim: int, hidden_size: int, initializer_range: float = 0.02):
        super().__init__()
        self.knowledge_dim = knowledge_dim

    def out_dim(self, in_dim: int) -> int:
        return in_dim + self.knowledge_dim

    def forward(self, features: torch.Tensor, knowledge: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, knowledge.to(features.dtype)], dim=-1)


class EmbeddingFusion(nn.Module):
    """Adds ``W k + b`` (hidden size) to the first token's input embedding."""

    site = "embedding"

    def __init__(self, knowledge_dim: int, hidden_size: int, initializer_range: float = 0.02):
        super().__init__()
        self.knowledge_dim = knowledge_dim
        self.proj = nn.Linear(knowledge_dim, hidden_size)
        # Small but not zero: the text path dominates at the start, yet the knowledge already moves the logits.
        nn.init.normal_(self.proj.weight, std=initializer_range)
        nn.init.zeros_(self.proj.bias)

    def out_dim(self, in_dim: int) -> int:
        return in_dim

    def forward(self, inputs_embeds: torch.Tensor, knowledge: torch.Tensor) -> torch.Tensor:
        added = self.proj(knowledge.to(self.proj.weight.dtype)).to(inputs_embeds.dtype)
        first = inputs_embeds[:, :1] + added.unsqueeze(1)
        return torch.cat([first, inputs_embeds[:, 1:]], dim=1)


FUSIONS: dict[str, type[nn.Module]] = {"after_encoder": AfterEncoderFusion, "embedding": EmbeddingFusion}


def build_fusion(
    name: str | None, knowledge_dim: int, hidden_size: int, initializer_range: float = 0.02
) -> nn.Module | None:
    """The fusion module called ``name`` (None: no knowledge); a wrong name or dimension is a ``BertlabError``."""
    if isinstance(knowledge_dim, bool) or not isinstance(knowledge_dim, int) or knowledge_dim < 0:
        raise BertlabError(f"knowledge_dim must be an integer >= 0, got {knowledge_dim!r}")
    if name is None:
        if knowledge_dim:
            raise BertlabError(
                f"knowledge_dim={knowledge_dim} but knowledge_fusion is null; set knowledge_fusion to one of "
                f"{', '.join(FUSIONS)}"
            )
        return None
    if name not in FUSIONS:
        raise BertlabError(f"unknown knowledge_fusion {name!r}; known: {', '.join(FUSIONS)} (or null for none)")
    if knowledge_dim < 1:
        raise BertlabError(
            f"knowledge_fusion {name!r} needs knowledge_dim >= 1 (the width of the data's knowledge vectors)"
        )
    return FUSIONS[name](knowledge_dim, hidden_size, initializer_range)
