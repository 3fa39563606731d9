"""Knowledge fusions: where an external vector per example joins a text classifier.

* ``AfterEncoderFusion`` — concatenate the vector with the pooled text vector before the classifier
  (Ostendorff et al. 2019, "Enriching BERT with Knowledge Graph Embeddings for Document Classification",
  arXiv:1909.08402, who concatenate metadata and author embeddings with BERT's output).
* ``EmbeddingFusion`` — project the vector to the hidden size and add it to the first token's input
  (word) embedding, before position/type embeddings and LayerNorm, so every layer can attend to it.

This file ships inside every export with knowledge fusion (``modeling_bertlab.py`` imports it), so it is
the one implementation: it imports torch only, never bertlab. ``knowledge.build_fusion`` checks the config.
"""

from __future__ import annotations

import torch
from torch import nn


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
