"""Masking whole units: words (WordPiece ``##`` pieces, or jieba words for Chinese) and spans (SpanBERT)."""

from __future__ import annotations

import logging

import torch

from bertlab.core.errors import BertlabError
from datamodules.buffer_rule import continuation_table
from datamodules.maskers.dynamic import DynamicMasker


def _run_starts(boundary: torch.Tensor) -> torch.Tensor:
    """For each position, the index of the latest ``boundary`` at or before it (position 0 counts)."""
    pos = torch.arange(boundary.shape[1]).expand_as(boundary)
    boundary = boundary.clone()
    boundary[:, 0] = True
    return torch.where(boundary, pos, 0).cummax(dim=1).values


def wordpiece_word_ids(input_ids, tokenizer) -> list[int]:
    """Word ids from WordPiece ``##`` continuations: a piece joins the word before it; specials get -1."""
    specials = set(tokenizer.all_special_ids)
    word, out = -1, []
    for tok_id, tok in zip(input_ids, tokenizer.convert_ids_to_tokens(list(map(int, input_ids)))):
        if int(tok_id) in specials:
            out.append(-1)
            continue
        if not tok.startswith("##") or not out or out[-1] == -1:
            word += 1
        out.append(word)
    return out


def jieba_word_ids(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """Chinese whole-word ids (as in Chinese BERT-wwm): each token gets the id of the jieba word
    holding its first character; tokens with empty offsets, e.g. (0, 0) for specials, get -1."""
    try:
        import jieba
    except ImportError as err:
        raise BertlabError("whole-word masking for Chinese needs jieba: pip install jieba") from err
    jieba.setLogLevel(logging.WARNING)
    char_word = [0] * len(text)
    for word_id, (_, start, end) in enumerate(jieba.tokenize(text)):
        char_word[start:end] = [word_id] * (end - start)
    return [char_word[start] if end > start else -1 for start, end in offsets]


class WholeWordMasker(DynamicMasker):
    """Whole-word masking (BERT's WWM release, Devlin et al. 2019; Chinese: Cui et al. 2019).

    Each word is selected with ``mlm_probability``, so the expected token rate stays
    ``mlm_probability``. A word is a run of consecutive tokens with equal ``word_ids`` (so ids that
    restart in a pair's second segment are fine); without ``word_ids``, WordPiece ``##`` pieces
    join the word before them. The 80/10/10 decision is made once per word, as SpanBERT does per
    span (Joshi et al. 2020, §3.1), so a word is never half [MASK]; random replacements are
    drawn per piece.
    """

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.is_continuation = torch.from_numpy(continuation_table(tokenizer))

    def _select(self, batch, u):
        maskable = batch["maskable"]
        if "word_ids" in batch:
            word = batch["word_ids"]
            boundary = (word < 0) | (word != torch.nn.functional.pad(word, (1, 0), value=-1)[:, :-1])
        else:
            boundary = ~self.is_continuation[batch["input_ids"]] | ~maskable
        start = _run_starts(boundary | ~maskable)
        return maskable & (u.gather(1, start) < self.mlm_probability), start


class SpanMasker(DynamicMasker):
    """SpanBERT span masking (Joshi et al. 2020, §3.1): span lengths ~ Geometric(``geometric_p``)
    truncated to [1, ``max_span_length``] and renormalised (mean 3.80 for 0.2 and 10, as in the paper), drawn until
    a per-sequence budget of round(mlm_probability × maskable tokens) is met; the last span is cut
    to fit. Spans are placed uniformly at random, not overlapping and with at least one token
    between them (when the budget allows), so every masked run is one span; one 80/10/10
    decision per span. Spans count tokens, not words.
    """

    def __init__(self, tokenizer, geometric_p: float = 0.2, max_span_length: int = 10, **kwargs):
        super().__init__(tokenizer, **kwargs)
        if not 0.0 < geometric_p <= 1.0 or max_span_length < 1:
            raise BertlabError(
                f"need 0 < geometric_p <= 1 and max_span_length >= 1, got {geometric_p}, {max_span_length}"
            )
        pmf = geometric_p * (1 - geometric_p) ** torch.arange(max_span_length, dtype=torch.float64)
        self.length_cdf = (pmf / pmf.sum()).cumsum(0)
        self.max_span_length = max_span_length

    def _select(self, batch, u):
        maskable, g = batch["maskable"], self._rng()
        n = maskable.sum(1)
        budget = torch.round(n.double() * self.mlm_probability).long()
        if int(budget.max()) == 0:
            return torch.zeros_like(maskable), None
        lengths = self._span_lengths(budget, g)
        starts = self._span_starts(lengths, n, budget, g)
        # paint spans in rank space (the i-th maskable token), then map ranks back to positions
        width, live = int(n.max()) + 1, (lengths > 0).long()
        delta = torch.zeros(len(n), width + 1, dtype=torch.long)
        delta.scatter_add_(1, starts.clamp(0, width), live).scatter_add_(1, (starts + lengths).clamp(0, width), -live)
        covered = delta.cumsum(1)[:, :width] > 0
        selected = maskable & covered.gather(1, (maskable.long().cumsum(1) - 1).clamp_min(0))
        previous = torch.nn.functional.pad(selected, (1, 0), value=False)[:, :-1]
        return selected, _run_starts(selected & ~previous)

    def _span_lengths(self, budget: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``[batch, max budget]`` span lengths summing to each row's budget, zeros at the end."""
        k = int(budget.max())
        u = torch.rand(len(budget), k, generator=g, dtype=torch.float64)
        lengths = (torch.searchsorted(self.length_cdf, u) + 1).clamp_max(self.max_span_length)
        lengths = (budget.unsqueeze(1) - (lengths.cumsum(1) - lengths)).clamp_min(0).minimum(lengths)
        # shuffle, so that the cut span is not always the rightmost one
        order = torch.rand(len(budget), k, generator=g).masked_fill(lengths == 0, 2.0).argsort(dim=1)
        return lengths.gather(1, order)

    @staticmethod
    def _span_starts(lengths, n, budget, g):
        """Uniform non-overlapping placement by stars and bars: the ``free`` unmasked tokens go into
        spans + 1 gaps, and each interior gap gets one more token unless the budget leaves no room."""
        k, spans = lengths.shape[1], (lengths > 0).sum(1)
        separated = (n - budget >= spans - 1).long()
        free = n - budget - separated * (spans - 1).clamp_min(0)
        slots = int((free + spans).max())
        keys = torch.rand(len(n), slots, generator=g).masked_fill(
            torch.arange(slots) >= (free + spans).unsqueeze(1), 2.0
        )
        bars = keys.argsort(dim=1).argsort(dim=1) < spans.unsqueeze(1)
        bar_slots = (~bars).long().argsort(dim=1, stable=True)[:, :k]  # the bars' slots, ascending
        bar_slots = torch.nn.functional.pad(bar_slots, (0, k - bar_slots.shape[1]))
        i = torch.arange(k)
        return bar_slots - i + separated.unsqueeze(1) * i + lengths.cumsum(1) - lengths
