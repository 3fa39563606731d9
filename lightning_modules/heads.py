"""Pooling heads: turn an encoder's hidden states into one vector per example.

Every head takes ``hidden_states`` — the tuple HF returns with ``output_hidden_states=True``:
the embedding output followed by each of the L layers, each ``[batch, seq, hidden]`` — and
the ``attention_mask``, and returns ``[batch, out_dim]``. A config picks one by ``class_path``
(``model.init_args.head``), as it picks a masker, and the classifier never looks inside it.

This file ships inside every export whose head HF has no class for (``modeling_bertlab.py`` imports
it), so it is the one implementation, for training and for transformers alike: it imports torch only,
never bertlab, and bad options are a ``ValueError`` (the classifier reports it as a ``BertlabError``
naming the head).

The multi-layer heads follow Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification?" (Table 3: first token of the last four layers concatenated / mean- /
max-pooled, and of all layers concatenated) and Mozafari, Farahbakhsh & Crespi, "A
BERT-based transfer learning approach for hate speech detection in online social media"
(Complex Networks 2019, arXiv:1910.12574; reused in their PLOS ONE 2020 paper on racial
bias): the "insert CNN" head over every layer's [CLS].

"All layers" means the L encoder layers, never the embedding output: at the first
position that output is the [CLS] embedding, the same for every example, so it carries
no information about the text.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn


class Head(nn.Module):
    """Built as ``Head(hidden_size, num_layers, **options)``; ``out_dim`` is the width of what it returns.

    ``options`` holds the options it was built with (recorded here, so a subclass need not): the export
    writes them with the class path into ``config.json``, and builds the same head again from them.
    """

    out_dim: int

    def __new__(cls, *args, **kwargs):
        head = super().__new__(cls)
        signature = inspect.signature(cls.__init__)
        bound = signature.bind_partial(head, *args, **kwargs).arguments
        options = {}
        for name in list(signature.parameters)[3:]:  # after self, hidden_size, num_layers
            kind = signature.parameters[name].kind
            if name in bound and kind is not inspect.Parameter.VAR_POSITIONAL:
                options.update(bound[name] if kind is inspect.Parameter.VAR_KEYWORD else {name: bound[name]})
        object.__setattr__(head, "options", {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})
        return head


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


def _check_k(k: int, num_layers: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_layers:
        raise ValueError(
            f"k={k} must be between 1 and the encoder's number of layers L={num_layers}; lower k or use ConcatAllHead"
        )
    return int(k)


def _first_tokens(hidden_states, k: int) -> torch.Tensor:
    """[B, k, H]: the first token of the last k layers, lowest layer first."""
    return torch.stack([h[:, 0] for h in hidden_states[-k:]], dim=1)


def _token_means(hidden_states, k: int, attention_mask) -> torch.Tensor:
    """[B, k, H]: the masked mean over the tokens of each of the last k layers, lowest layer first."""
    mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
    return torch.stack([(h * mask).sum(1) / mask.sum(1).clamp_min(1.0) for h in hidden_states[-k:]], dim=1)


class LastKHead(Head):
    """The first token of the last k layers (Sun et al. 2019, Table 3), reduced across the layers:
    ``concat`` (lowest layer first; out_dim k·H), element-wise ``mean`` or ``max`` (out_dim H).
    ``ConcatAllHead`` is k = L."""

    REDUCE = ("concat", "mean", "max")

    def __init__(
        self, hidden_size: int, num_layers: int, k: int = 4, reduce: Literal["concat", "mean", "max"] = "concat"
    ):
        super().__init__()
        if reduce not in self.REDUCE:
            raise ValueError(f"reduce must be one of {', '.join(self.REDUCE)}, got {reduce!r}")
        self.k, self.reduce = _check_k(k, num_layers), reduce
        self.out_dim = self.k * hidden_size if reduce == "concat" else hidden_size

    def forward(self, hidden_states, attention_mask):
        first = _first_tokens(hidden_states, self.k)
        if self.reduce == "concat":
            return first.flatten(1)
        return first.mean(1) if self.reduce == "mean" else first.amax(1)


class ConcatAllHead(LastKHead):
    """First token of every encoder layer concatenated, embedding output excluded (Sun et al. 2019); out_dim L·H."""

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__(hidden_size, num_layers, k=num_layers, reduce="concat")


class LayerCnnHead(Head):
    """A CNN over the stack of every layer's [CLS] (Mozafari et al. 2019/2020).

    The L first-token vectors form a 1-channel L × H map. For each kernel height k a
    conv with ``num_filters`` kernels of size (k, H) slides over the layers only, then
    ReLU and a max over the L−k+1 positions; the pooled features of all heights are
    concatenated and passed through dropout. out_dim = len(kernel_sizes) · num_filters.
    The kernel heights and filter count are ours to tune, not taken from the paper.

    ``token: mean`` stacks each layer's masked token mean instead of its [CLS]. For encoders trained
    with mean pooling, such as all-MiniLM-L6-v2, the [CLS] of layers 1-5 is the same vector for every
    sentence (pairwise cosine 1.000 over fine-food reviews, one dimension holding 98 % of its energy);
    only the top layer's varies, so the paper's [CLS] stack gives the convolutions almost nothing to read.
    """

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        kernel_sizes: Sequence[int] = (2, 3, 4),
        num_filters: int = 32,
        dropout: float = 0.1,
        token: Literal["first", "mean"] = "first",
    ):
        super().__init__()
        if token not in ("first", "mean"):
            raise ValueError(f"token must be first ([CLS]) or mean, got {token!r}")
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or num_filters < 1:
            raise ValueError(
                f"it needs at least one kernel size and num_filters >= 1, got kernel_sizes={kernel_sizes}, "
                f"num_filters={num_filters}"
            )
        bad = [k for k in kernel_sizes if not 1 <= k <= num_layers]
        if bad:
            raise ValueError(
                f"kernel sizes {bad} do not fit the encoder's L={num_layers} layers; use kernel sizes "
                f"between 1 and {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_layers, self.token = num_layers, token
        self.kernel_sizes = kernel_sizes
        self.convs = nn.ModuleList(nn.Conv2d(1, num_filters, (k, hidden_size)) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = len(kernel_sizes) * num_filters

    def forward(self, hidden_states, attention_mask):
        if self.token == "mean":
            x = _token_means(hidden_states, self.num_layers, attention_mask).unsqueeze(1)  # [B, 1, L, H]
        else:
            x = _first_tokens(hidden_states, self.num_layers).unsqueeze(1)
        pooled = [torch.relu(conv(x)).squeeze(-1).amax(-1) for conv in self.convs]  # each [B, F]
        return self.dropout(torch.cat(pooled, dim=-1))
