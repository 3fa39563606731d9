"""What the MLM data module serves: cached sequences, with what a masker may need, and the ``Scorer`` settings.

``MLMDataset`` reads a split's ``TokenArrays`` example by example: the token ids, jieba ``word_ids`` (cached in
the token-type slot) and per-token ``scores`` for selective/entropy masking (one flat array aligned with the
flat token stream, read per example with ``pread``: ``datamodules.file_array``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from datamodules.token_cache import TokenArrays


@dataclass
class Scorer:
    """What scores every train token once, before training, for ``SelectiveMasker``.

    Args:
        kind: ``model_b`` (P(important) from Gu et al.'s token classifier), ``entropy`` (|H_i − H(s)| or KL
            of Model_0's task prediction with the word masked), ``saliency`` (gradient × input of a
            classifier) or ``mlm_entropy`` (a masked LM's predictive entropy).
        model: the scorer's directory: a TokenTagger export (``model_b``), Model_0, a fine-tuned sequence
            classifier (``entropy``, ``saliency``), or a masked LM (``mlm_entropy``).
        divergence: for ``entropy``: ``entropy`` (|H_i − H(s)|) or ``kl``.
        batch_size: sentences scored per forward pass.
        precision: ``auto`` (bf16 autocast for ``model_b`` and ``entropy`` where the hardware computes bf16
            natively, else fp32), ``bf16`` or ``fp32``. Scores are cached per dtype.
    """

    kind: Literal["model_b", "entropy", "saliency", "mlm_entropy"]
    model: str
    divergence: Literal["entropy", "kl"] = "entropy"
    batch_size: int = 64
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class MLMDataset(torch.utils.data.Dataset):
    """Example ``i`` of a split's cached ``arrays``: ``input_ids``, ``idx`` (= i), and ``word_ids`` / ``scores``
    where the masker uses them. Holds nothing per example in memory (``TokenArrays`` reads from its files)."""

    def __init__(self, arrays: TokenArrays, word_ids: bool, scores=None):
        self.arrays, self.word_ids, self.scores = arrays, word_ids, scores

    def __len__(self) -> int:
        return len(self.arrays)

    def lengths(self) -> np.ndarray:
        return self.arrays.lengths()

    def __getitem__(self, i: int) -> dict:
        item = self.arrays.get(i)
        item["idx"] = int(i)
        if self.word_ids:
            item["word_ids"] = item.pop("token_type_ids")
        if self.scores is not None:
            a, b = self.arrays.span(i)
            item["scores"] = np.asarray(self.scores[a:b], dtype=np.float32)
        return item
