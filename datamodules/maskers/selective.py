"""``SelectiveMasker``: the highest-scoring tokens first (Gu et al. 2020), for every score kind."""

from __future__ import annotations

import torch

from bertlab.core.errors import BertlabError
from datamodules.buffer_rule import continuation_table
from datamodules.maskers.dynamic import DynamicMasker
from datamodules.maskers.words import _run_starts

FILLS = ("none", "random")


class SelectiveMasker(DynamicMasker):
    """Task-guided selective masking (Gu et al. 2020, "Train No Evil", §3.2): mask the words a task model
    marks as important, given per token as ``scores``. One masker for every score kind
    (``datamodules.corpus_scoring``): ``selective`` reads Model_b's P(important); ``EntropyMasker`` below
    reads how far Model_0's task prediction moves when the word is masked.

    Per sequence the budget is round(mlm_probability × maskable tokens), as for span masking. Units are
    whole words (``word_ids``, else WordPiece ``##`` pieces join the word before them; ``whole_word:
    false`` makes every token a unit); a unit's score is its pieces' maximum. Units scoring above
    ``min_score`` are important and are taken highest first, ties at random. ``temperature`` T > 0 samples
    them without replacement instead, ∝ exp(score / (T · m)) with m the row's largest important score (so T
    does not depend on the scores' scale: at T = 0.25 the top word is e⁴ ≈ 55× as likely as one scoring 0),
    by Gumbel top-k; the masks then change every epoch. A unit is taken while the count stays nearer the
    budget with it than without it. When the important units do not fill the budget, ``fill: none`` (Gu et
    al.'s code, which masks only important tokens) leaves the rate below ``mlm_probability``; ``fill:
    random`` fills it with the other units in random order. Then 80/10/10, one decision per unit. The
    fill, the ties and the sampling come from the masker's own (seed, epoch, worker) stream, as for
    ``dynamic``.

    Each batch carries ``mask_stats`` = (masked, maskable, masked important) token counts, which the
    MLM module logs as ``train/mask_rate`` (the effective masking rate) and
    ``train/mask_important_fraction`` (the share of masked tokens that are important, not filler).
    """

    def __init__(
        self,
        tokenizer,
        temperature: float = 0.0,
        min_score: float = 0.0,
        whole_word: bool = True,
        fill: str = "none",
        **kwargs,
    ):
        super().__init__(tokenizer, **kwargs)
        if temperature < 0:
            raise BertlabError(f"temperature must be >= 0, got {temperature}")
        if fill not in FILLS:
            raise BertlabError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
        self.temperature, self.min_score, self.whole_word, self.fill = temperature, float(min_score), whole_word, fill
        self._maskable = self._important = None  # the last batch's, for ``mask_stats``
        if whole_word:
            self.is_continuation = torch.from_numpy(continuation_table(tokenizer))

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        out = super().__call__(features)
        selected = out["labels"] != -100
        out["mask_stats"] = torch.stack(
            [selected.sum(), self._maskable.sum(), (selected & self._important).sum()]
        ).double()
        return out

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
            scale = unit_score.abs().masked_fill(~important, 0.0).amax(1, keepdim=True).clamp_min(1e-12)
            gumbel = -torch.log(-torch.log(u.double().clamp(1e-12, 1 - 1e-12)))
            key = key / (self.temperature * scale) + gumbel
        key = torch.where(important, key, u.double())  # unimportant units: a random order
        fill = is_start if self.fill == "random" else torch.zeros_like(is_start)
        tier = important.long() + (important | fill).long()  # 2 important, 1 the fill, 0 never taken
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
        self._maskable, self._important = maskable, maskable & important.gather(1, start)
        return maskable & chosen.gather(1, start), start


class EntropyMasker(SelectiveMasker):
    """The seed author's entropy masking: ``SelectiveMasker`` over Model_0's entropy (or KL) scores
    (``datamodules.task_entropy``), sampled with ``temperature`` 0.25 by default so that the masks vary by
    epoch (at T = 0, always the same top words: static masking), and filled at random up to the rate
    (a word whose masking cannot move the prediction scores 0 and is filler)."""

    def __init__(self, tokenizer, temperature: float = 0.25, fill: str = "random", **kwargs):
        super().__init__(tokenizer, temperature=temperature, fill=fill, **kwargs)
