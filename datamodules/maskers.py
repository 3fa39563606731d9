"""Maskers: the one place that decides which tokens an MLM predicts.

A masker is a collator, ``masker(features) -> batch``. Each feature holds ``input_ids`` (with
[CLS]/[SEP]) and optionally ``attention_mask``, ``token_type_ids``, ``special_tokens_mask``,
``word_ids`` (-1 at specials), ``idx`` and ``scores``. The batch holds ``input_ids`` (corrupted),
``attention_mask``, ``labels`` (the original id where the model must predict, -100 elsewhere) and
``token_type_ids`` when given; padding is dynamic and on the right.

Selected tokens follow BERT's 80/10/10 rule (Devlin et al. 2019, §3.1): ``replace_prob`` become
[MASK], ``random_prob`` a random non-special token, ``keep_prob`` stay. Specials and padding are
never selected. All randomness comes from the masker's own ``torch.Generator``, so the global
torch seed does not change the masks. Every masker works on the padded batch with tensor ops.
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import get_worker_info

from bertlab.core.errors import BertlabError


def _mix(*ints: int) -> int:
    """A stable 63-bit seed from integers (Python's ``hash`` is not meant for this)."""
    digest = hashlib.blake2b("/".join(map(str, ints)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _run_starts(boundary: torch.Tensor) -> torch.Tensor:
    """For each position, the index of the latest ``boundary`` at or before it (position 0 counts)."""
    pos = torch.arange(boundary.shape[1]).expand_as(boundary)
    boundary = boundary.clone()
    boundary[:, 0] = True
    return torch.where(boundary, pos, 0).cummax(dim=1).values


def _top_k(keys: torch.Tensor, tiebreak: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the ``k`` eligible positions with the largest ``keys``; ties go by ``tiebreak``."""
    keys = keys.masked_fill(~eligible, float("-inf"))
    perm = tiebreak.argsort(dim=1)
    order = perm.gather(1, keys.gather(1, perm).argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(keys.shape[1]).expand_as(order))
    return eligible & (rank < k.unsqueeze(1))


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


class DynamicMasker:
    """Fresh token-level masks on every batch (RoBERTa, Liu et al. 2019, §4.1).

    Each maskable token is selected independently with ``mlm_probability``, so the rate is
    exact in expectation (BERT's per-sequence count rounds, which biases short sequences).
    The generator is seeded from (seed, epoch, DataLoader worker id), so workers, each holding a
    copy of the masker, do not draw the same numbers. Call ``set_epoch`` every epoch before the
    loader's workers start: a non-persistent worker gets a fresh copy each epoch and would
    otherwise repeat last epoch's stream; a persistent worker never sees a later ``set_epoch``.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        replace_prob: float = 0.8,
        random_prob: float = 0.1,
        keep_prob: float = 0.1,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
    ):
        if not 0.0 < mlm_probability < 1.0:
            raise BertlabError(
                f"mlm_probability must be strictly between 0 and 1, got {mlm_probability}; BERT uses 0.15"
            )
        split = {"replace_prob": replace_prob, "random_prob": random_prob, "keep_prob": keep_prob}
        for name, value in split.items():
            if not 0.0 <= value <= 1.0:
                raise BertlabError(f"{name} must be in [0, 1], got {value}")
        if abs(sum(split.values()) - 1.0) > 1e-6:
            raise BertlabError(
                f"replace_prob + random_prob + keep_prob must sum to 1, got {sum(split.values()):.6g}; BERT uses "
                "0.8/0.1/0.1"
            )
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise BertlabError("masked LM needs a tokenizer with both a mask and a pad token")
        self.mlm_probability, self.replace_prob, self.random_prob = mlm_probability, replace_prob, random_prob
        self.seed, self.epoch, self.pad_to_multiple_of = seed, 0, pad_to_multiple_of
        self.pad_id, self.mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
        self.pad_type_id = getattr(tokenizer, "pad_token_type_id", 0)
        specials = set(tokenizer.all_special_ids) | {self.pad_id, self.mask_id}
        self.special_ids = torch.tensor(sorted(specials))
        self.random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in specials])
        self.generator, self._stream = torch.Generator(), None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        stream = (self.seed, self.epoch, -1 if info is None else info.id)
        if stream != self._stream:
            self.generator.manual_seed(_mix(*stream))
            self._stream = stream
        return self.generator

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self._collate(features)
        u_select, u_action, u_token = self._uniforms(features, batch["input_ids"].shape)
        selected, unit_start = self._select(batch, u_select)
        if unit_start is not None:  # one 80/10/10 decision per word or span
            u_action = u_action.gather(1, unit_start)
        input_ids = batch["input_ids"]
        replace = selected & (u_action < self.replace_prob)
        randomize = selected & ~replace & (u_action < self.replace_prob + self.random_prob)
        random_ids = self.random_ids[(u_token * len(self.random_ids)).long().clamp_max(len(self.random_ids) - 1)]
        out = {
            "input_ids": torch.where(replace, self.mask_id, torch.where(randomize, random_ids, input_ids)),
            "attention_mask": batch["attention_mask"],
            "labels": torch.where(selected, input_ids, -100),
        }
        if "token_type_ids" in batch:
            out["token_type_ids"] = batch["token_type_ids"]
        return out

    def _uniforms(self, features: list[dict], shape: torch.Size) -> torch.Tensor:
        """Three uniforms per token: selection, 80/10/10 action, random-token choice."""
        return torch.rand((3, *shape), generator=self._rng())

    def _select(self, batch: dict, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The positions to predict, and per position the start of its unit (None: each token alone)."""
        return batch["maskable"] & (u < self.mlm_probability), None

    def _collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        def pad(key, value, dtype=torch.long):
            padded = pad_sequence(
                [torch.as_tensor(f[key], dtype=dtype) for f in features], batch_first=True, padding_value=value
            )
            return torch.nn.functional.pad(padded, (0, width - padded.shape[1]), value=value)

        lengths = torch.tensor([len(f["input_ids"]) for f in features])
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        first = features[0]
        batch = {"input_ids": pad("input_ids", self.pad_id)}
        in_length = torch.arange(width) < lengths.unsqueeze(1)
        batch["attention_mask"] = pad("attention_mask", 0) if "attention_mask" in first else in_length.long()
        maskable = batch["attention_mask"].bool() & in_length & ~torch.isin(batch["input_ids"], self.special_ids)
        if "special_tokens_mask" in first:
            maskable &= pad("special_tokens_mask", 1) == 0
        batch["maskable"] = maskable
        if "token_type_ids" in first:
            batch["token_type_ids"] = pad("token_type_ids", self.pad_type_id)
        if "word_ids" in first:
            batch["word_ids"] = pad("word_ids", -1)
        if "scores" in first:
            batch["scores"] = pad("scores", 0.0, torch.float)
        return batch


class StaticMasker(DynamicMasker):
    """Static masking as in BERT's data preparation (Devlin et al. 2019; ``dupe_factor`` in its
    create_pretraining_data.py), which Sun et al. 2019 reuse for further pre-training:
    ``dupe_factor`` fixed masked copies of each example, epoch ``e`` using copy
    ``e % dupe_factor``. RoBERTa (Liu et al. 2019, §4.1) compares this, with 10 copies, to dynamic.

    The copy's uniforms come from a generator seeded by (seed, idx, copy) over the example's own
    length, so its mask does not depend on the batch it lands in or its padding. This costs one
    tiny generator call per example.
    """

    def __init__(self, tokenizer, dupe_factor: int = 10, **kwargs):
        super().__init__(tokenizer, **kwargs)
        if int(dupe_factor) != dupe_factor or dupe_factor < 1:
            raise BertlabError(f"dupe_factor must be a positive integer, got {dupe_factor}")
        self.dupe_factor = int(dupe_factor)

    def _uniforms(self, features: list[dict], shape: torch.Size) -> torch.Tensor:
        if any("idx" not in f for f in features):
            raise BertlabError(
                "static masking needs a stable 'idx' in every example; keep the example index in the dataset"
            )
        copy, g, out = self.epoch % self.dupe_factor, torch.Generator(), torch.zeros((3, *shape))
        for row, f in enumerate(features):
            g.manual_seed(_mix(self.seed, int(f["idx"]), copy))
            out[:, row, : len(f["input_ids"])] = torch.rand((3, len(f["input_ids"])), generator=g)
        return out


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
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.is_continuation = torch.tensor([p.startswith("##") for p in pieces])

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
            pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            self.is_continuation = torch.tensor([p.startswith("##") for p in pieces])

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


MASKERS: dict[str, type[DynamicMasker]] = {
    "dynamic": DynamicMasker,
    "static": StaticMasker,
    "whole_word": WholeWordMasker,
    "span": SpanMasker,
    "selective": SelectiveMasker,
    "entropy": SelectiveMasker,
}


def build_masker(name: str, tokenizer, **kwargs) -> DynamicMasker:
    if name not in MASKERS:
        raise BertlabError(f"unknown masker {name!r}; known maskers: {', '.join(sorted(MASKERS))}")
    return MASKERS[name](tokenizer, **kwargs)
