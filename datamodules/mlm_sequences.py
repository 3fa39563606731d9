"""Documents into MLM sequences, ``[CLS] … [SEP]``: the ``line_by_line`` and ``packed`` modes.

``line_by_line``: one sequence per document, cut to ``max_length``. ``packed``: documents joined with
[SEP] and cut into ``max_length`` blocks — one shorter where a document ends in a block's last slot, and
the last block of each run of documents (a shard's split) shorter; unlike ``run_mlm``'s ``group_texts``,
nothing is dropped.

Runs in the tokenizing workers on the bare ``tokenizers.Tokenizer`` (built from the HF tokenizer's JSON):
the same token ids as the ``transformers`` wrapper, without its per-call overhead, and cheap to start in a
worker process. ``words`` adds jieba word ids (Chinese whole-word masking), which ride in the cache's
token-type slot.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

MODES = ("line_by_line", "packed")
BATCH = 1000  # documents encoded per call


@dataclass(frozen=True)
class Layout:
    """How documents become sequences, and the special ids that frame them."""

    mode: str
    max_length: int
    words: bool
    cls_id: int
    sep_id: int
    unk_id: int | None


@dataclass
class Sequences:
    """Sequences as one flat token stream plus lengths (``types``: word ids, or None); ``unk`` and
    ``tokens`` count the documents' own tokens, before cutting, for the coverage check."""

    ids: np.ndarray
    lengths: np.ndarray
    types: np.ndarray | None
    unk: int
    tokens: int


class Sequencer:
    def __init__(self, tokenizer_json: str, layout: Layout):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.layout = layout

    def __call__(self, docs: Iterable[str]) -> Sequences:
        """All of ``docs`` as sequences (packed blocks run across the whole iterable)."""
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []  # one per batch: numpy, not int lists
        unk = tokens = 0
        block: list[int] = []  # packed: the block being filled
        lay = self.layout
        budget = lay.max_length - 2
        docs = iter(docs)
        while batch := list(itertools.islice(docs, BATCH)):
            rows: list[list[int]] = []
            words: list[list[int]] = []
            encodings = self.tokenizer.encode_batch(batch, add_special_tokens=False)
            for enc in encodings:
                tokens += len(enc.ids)
                if lay.unk_id is not None:
                    unk += enc.ids.count(lay.unk_id)
            if lay.mode == "line_by_line":
                for doc, enc in zip(batch, encodings):
                    rows.append([lay.cls_id, *enc.ids[:budget], lay.sep_id])
                    if lay.words:
                        from datamodules.maskers import jieba_word_ids

                        words.append([-1, *jieba_word_ids(doc, enc.offsets[:budget]), -1])
                parts.append(_arrays(rows, words if lay.words else None))
                continue
            for t in _joined(encodings, lay.sep_id):
                if t == lay.sep_id and (not block or len(block) == budget):
                    continue  # a document ends at a block's edge: the block's own [CLS] / [SEP] marks it
                if t == lay.sep_id and len(block) == budget - 1:
                    rows.append([lay.cls_id, *block, lay.sep_id])  # one slot short rather than [SEP] [SEP]
                    block = []
                    continue
                if len(block) == budget:
                    rows.append([lay.cls_id, *block, lay.sep_id])
                    block = []
                block.append(t)
            parts.append(_arrays(rows, None))
        if block and block[-1] == lay.sep_id:
            block.pop()
        if block:
            parts.append(_arrays([[lay.cls_id, *block, lay.sep_id]], None))
        if not parts:
            parts.append(_arrays([], [] if lay.words else None))
        ids, lengths, types = (list(p) for p in zip(*parts))
        types = np.concatenate(types) if lay.words else None
        return Sequences(np.concatenate(ids), np.concatenate(lengths), types, unk, tokens)


def _joined(encodings, sep_id: int) -> Iterator[int]:
    for enc in encodings:
        yield from enc.ids
        yield sep_id


def _arrays(rows: list[list[int]], words: list[list[int]] | None):
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    n = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=n)
    types = None if words is None else np.fromiter(itertools.chain.from_iterable(words), dtype=np.int32, count=n)
    return ids, lengths, types
