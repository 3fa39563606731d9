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
The fusion modules themselves are ``lightning_modules/fusions.py``, the file exports ship; this module
checks the config and builds one.
"""

from __future__ import annotations

from torch import nn

from bertlab.core.errors import BertlabError
from lightning_modules.fusions import FUSIONS, AfterEncoderFusion, EmbeddingFusion

__all__ = ["FUSIONS", "AfterEncoderFusion", "EmbeddingFusion", "build_fusion"]


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
