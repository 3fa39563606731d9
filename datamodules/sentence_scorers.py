"""The per-sentence corpus scorers of selective masking: Model_b's P(important) and Model_0's entropy.

Gu et al. 2020 label and score sentences, not documents (thunlp/SelectiveMasking ``data/sc_mask_gen.py``
splits every document with spaCy's sentencizer first). Here each MLM row is cut into sentences by
``datamodules.sentences.TokenSentences``; each sentence is scored on its own, wrapped in the tokenizer's
specials ([CLS] … [SEP]), and its scores are written back at its positions in the row (specials 0).
Shorter inputs make the entropy scorer's L masked variants per sentence cost far less than per document.

Sentences are sorted by length and packed into forwards: up to ``batch_size`` sentences for Model_b,
up to ``batch_size`` rows of masked variants for entropy (a sentence's variants always share one
forward, so that no rounding differs between a sentence and its variants). The forward runs on the GPU
when there is one, under bf16 autocast where ``dtype`` says so.
"""

from __future__ import annotations

import numpy as np
import torch

from datamodules.buffer_rule import continuation_table, continuation_word_ids
from datamodules.sentences import TokenSentences
from datamodules.task_entropy import divergence_scores, masked_variants
from datamodules.task_scorer import classifier_probs, scoring_device
from datamodules.token_cache import SpecialTemplate


def _pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(int(r.shape[-1]) for r in rows)
    ids = torch.full((sum(r.shape[0] for r in rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    at = 0
    for r in rows:
        ids[at : at + r.shape[0], : r.shape[1]] = r
        mask[at : at + r.shape[0], : r.shape[1]] = 1
        at += r.shape[0]
    return ids, mask


class SentenceScorer:
    """``scorer(arrays, lo, hi)``: the flat float32 scores of rows ``lo:hi`` of ``arrays`` (``TokenArrays``)."""

    def __init__(self, model, tokenizer, dtype: torch.dtype, batch_size: int, jieba_words: bool = False):
        self.model = model.eval().to(scoring_device())
        self.dtype, self.batch_size, self.jieba_words = dtype, int(batch_size), jieba_words
        self.sentences = TokenSentences(tokenizer)
        self.continuation = continuation_table(tokenizer)
        template = SpecialTemplate.from_tokenizer(tokenizer)
        self.prefix = torch.tensor(template.prefix, dtype=torch.long)
        self.suffix = torch.tensor(template.suffix, dtype=torch.long)
        self.pad_id, self.mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id

    def _items(self, arrays, lo: int, hi: int) -> list[tuple[int, np.ndarray, list[int]]]:
        """(flat position in the chunk, content ids, word ids) of every sentence of the rows."""
        items, base = [], 0
        for i in range(lo, hi):
            row = arrays.get(i)
            ids = row["input_ids"]
            for a, b in self.sentences.spans(ids):
                if self.jieba_words and "token_type_ids" in row:
                    words = [int(w) for w in row["token_type_ids"][a:b]]
                else:
                    words = continuation_word_ids(ids[a:b].tolist(), self.continuation)
                items.append((base + a, ids[a:b], words))
            base += len(ids)
        return sorted(items, key=lambda item: len(item[1]))

    def _wrap(self, ids: np.ndarray) -> torch.Tensor:
        return torch.cat([self.prefix, torch.as_tensor(ids, dtype=torch.long), self.suffix])

    def __call__(self, arrays, lo: int, hi: int) -> np.ndarray:
        out = np.zeros(int(arrays.offsets[hi] - arrays.offsets[lo]), dtype=np.float32)
        self.score(self._items(arrays, lo, hi), out)
        return out

    def score(self, items, out: np.ndarray) -> None:
        raise NotImplementedError


class ModelBScorer(SentenceScorer):
    """P(important) per token from Model_b, a token classifier (Gu et al. 2020, §3.1)."""

    @torch.inference_mode()
    def score(self, items, out: np.ndarray) -> None:
        device, k = scoring_device(), len(self.prefix)
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            ids, mask = _pad([self._wrap(ids)[None] for _, ids, _ in batch], self.pad_id)
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            p = torch.softmax(logits.float(), -1)[..., 1].cpu().numpy()
            for r, (at, sentence, _) in enumerate(batch):
                out[at : at + len(sentence)] = p[r, k : k + len(sentence)]


class EntropyScorer(SentenceScorer):
    """How far Model_0's prediction moves when each word is masked (``datamodules.task_entropy``)."""

    def __init__(self, model, tokenizer, dtype, batch_size, jieba_words=False, divergence: str = "entropy"):
        super().__init__(model, tokenizer, dtype, batch_size, jieba_words)
        self.divergence = divergence
        self.prob_fn = classifier_probs(self.model, dtype)

    def score(self, items, out: np.ndarray) -> None:
        k, pack = len(self.prefix), []
        for item in items:
            at, ids, words = item
            marks = [-1] * k + list(words) + [-1] * len(self.suffix)
            rows, units = masked_variants(self._wrap(ids), marks, self.mask_id)
            if units:
                pack.append((at, len(ids), rows, units))
            if pack and sum(p[2].shape[0] for p in pack) >= self.batch_size:
                self._forward(pack, out)
                pack = []
        if pack:
            self._forward(pack, out)

    def _forward(self, pack, out: np.ndarray) -> None:
        ids, mask = _pad([rows for _, _, rows, _ in pack], self.pad_id)
        p, row, k = self.prob_fn(ids, mask), 0, len(self.prefix)
        for at, n, rows, units in pack:
            scores = divergence_scores(p[row : row + rows.shape[0]], units, rows.shape[1], self.divergence)
            out[at : at + n] = scores[k : k + n]
            row += rows.shape[0]
