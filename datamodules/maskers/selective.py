"""``SelectiveMasker``: the highest-scoring tokens first (Gu et al. 2020), for every score kind."""

from __future__ import annotations

import torch

from bertlab.core.errors import BertlabError
from datamodules.buffer_rule import continuation_table
from datamodules.maskers.dynamic import DynamicMasker
from datamodules.maskers.words import _run_starts


class SelectiveMasker(DynamicMasker):
    """Task-guided selective masking (Gu et al. 2020, "Train No Evil", §3.2): mask the words a task model
    marks as important, given per token as ``scores``. One masker for both score kinds
    (``datamodules.corpus_scoring``): ``selective`` reads Model_b's P(important), ``entropy`` how far
    Model_0's task prediction moves when the word is masked.

    Per sequence the budget is round(mlm_probability × maskable tokens), as for span masking. Units are
    whole words (``word_ids``, else WordPiece ``##`` pieces join the word before them; ``whole_word:
    false`` makes every token a unit); a unit's score is its pieces' maximum. Units scoring above
    ``min_score`` are important and are taken highest first, ties at random (``temperature`` T > 0
    samples them without replacement ∝ exp(score / T) instead, by Gumbel top-k); when they do not fill
    the budget, the other units fill it in random order, so the rate stays as configured. A unit is
    taken while the count stays nearer the budget with it than without it. Then 80/10/10, one
    decision per unit. The random fill and ties come from the masker's own (seed, epoch, worker) stream,
    as for ``dynamic``; the important units are the same every epoch.
    """

    def __init__(self, tokenizer, temperature: float = 0.0, min_score: float = 0.0, whole_word: bool = True, **kwargs):
        super().__init__(tokenizer, **kwargs)
        if temperature < 0:
            raise BertlabError(f"temperature must be >= 0, got {temperature}")
        self.temperature, self.min_score, self.whole_word = temperature, float(min_score), whole_word
        if whole_word:
            self.is_continuation = torch.from_numpy(continuation_table(tokenizer))

    def _units(self, batch: dict) -> torch.Tensor:
        maskable = batch["maskable"]
        if not self.whole_word:
            boundary = torch.ones_like(maskable)
        elif "word_ids" in batch:
            word = batch["word_ids"]
            boundary = (word < 0) | (word != torch.nn.functional.pad(word, (1, 0), value=-1)[:, :-1])
        else:
            boundary = ~self.is_continuation[batch["input_ids"]]
        after_special = ~torch.nn.functional.pad(maskable, (1, 0), value=False)[:, :-1]  # a word starts after [CLS]
        return _run_starts(boundary | ~maskable | after_special)

    def _select(self, batch, u):
        if "scores" not in batch:
            raise BertlabError(
                f"{type(self).__name__} needs per-token 'scores' in every example; give the MLM data a `scorer` "
                "(datamodules/corpus_scoring.py)"
            )
        maskable, scores = batch["maskable"], batch["scores"].double()
        start = self._units(batch)
        is_start = maskable & (start == torch.arange(start.shape[1]))
        unit_score = torch.full_like(scores, float("-inf")).scatter_reduce(
            1, start, scores.masked_fill(~maskable, float("-inf")), "amax"
        )
        size = torch.zeros_like(start).scatter_add_(1, start, maskable.long())
        important = is_start & (unit_score > self.min_score)
        tiebreak, coin = torch.rand((2, *start.shape), generator=self._rng(), dtype=torch.float64)
        key = unit_score
        if self.temperature > 0:
            key = key / self.temperature - torch.log(-torch.log(u.double().clamp(1e-12, 1 - 1e-12)))
        key = torch.where(important, key, u.double())  # unimportant units: a random order
        tier = important.long() + is_start.long()  # 2 important, 1 the fill, 0 no unit
        order = tiebreak.argsort(dim=1)
        for k in (key, tier):  # stable sorts: the last key is the primary one
            order = order.gather(1, k.gather(1, order).argsort(dim=1, descending=True, stable=True))
        sizes = size.gather(1, order) * (tier.gather(1, order) > 0)
        before = sizes.cumsum(1) - sizes
        budget = torch.round(maskable.sum(1).double() * self.mlm_probability).long().unsqueeze(1)
        twice = (
            2 * before + sizes
        )  # taking the unit lands nearer the budget than leaving it: 2·before + size < 2·budget
        take = (sizes > 0) & ((twice < 2 * budget) | ((twice == 2 * budget) & (coin < 0.5)))
        chosen = torch.zeros_like(maskable).scatter_(1, order, take)
        return maskable & chosen.gather(1, start), start


EntropyMasker = SelectiveMasker  # one masker for both score kinds; the name stays importable
