"""``PETDataModule``: labelled text rendered into cloze patterns for PET (Schick & Schütze 2021,
"Exploiting Cloze Questions for Few Shot Text Classification and Natural Language Inference").

Split of concerns, one source of truth each:

* the **patterns** live here, because rendering needs the tokenizer (to place the mask token and
  to truncate the text, never the pattern words or the mask). ``lightning_modules.pet.PET`` does
  not take them: it reads the number of patterns off the batch;
* the **verbalizer** lives on the module (it maps label ids to vocabulary columns of the MLM head).

A pattern holds ``{text}``, optionally ``{text_pair}``, and the literal ``[MASK]`` once, e.g.
``"{text} It was [MASK]."``; the tokenizer's own mask token goes in its place. Whitespace just
before a slot belongs to the slot: the text is tokenised as " text" and the mask stands for
" word" (as the verbalizer words are tokenised, which is what byte-level BPE needs). A literal
mask token inside the data's text becomes the unknown token, so each row has exactly one mask.

Every example is rendered with every pattern. A batch of B examples and P patterns holds
``input_ids`` / ``attention_mask`` ``[B·P, T]`` (row ``b·P + p``), ``mask_pos`` ``[B·P]``, and
``labels`` (class ids) and ``idx`` ``[B]``. With ``masker`` set, training batches also carry
``mlm_input_ids``, ``mlm_attention_mask``, ``mlm_labels`` (-100 = not masked) built by that masker
from the plain text, for PET's auxiliary language-modelling loss (§3.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import torch

from bertlab.core.errors import BertlabError
from bertlab.core.truncation import TRUNCATIONS, budgets, cut
from datamodules import sources
from datamodules.batching import PadCollator
from datamodules.classification import ClassificationDataModule
from datamodules.maskers import DynamicMasker
from datamodules.token_cache import TokenArrays, cache_key, cached_arrays, special_template, tokenizer_fingerprint

MASK_SLOT = "[MASK]"
DEFAULT_PATTERN = "{text} It was [MASK]."
_SLOT_RE = re.compile(r"(\{text\}|\{text_pair\}|\[MASK\])")


def parse_pattern(pattern: str) -> list[tuple[str, str]]:
    """Pieces ``(kind, value)``: kind is ``literal`` (value: the text), ``text``, ``text_pair``, or ``mask``;
    value of a slot is ``" "`` when whitespace preceded it, else ``""``."""
    pieces = [p for p in _SLOT_RE.split(pattern) if p]
    counts = {slot: pieces.count(slot) for slot in ("{text}", "{text_pair}", MASK_SLOT)}
    if counts[MASK_SLOT] != 1 or counts["{text}"] != 1 or counts["{text_pair}"] > 1:
        raise BertlabError(
            f"pattern {pattern!r} must hold {MASK_SLOT} exactly once, {{text}} exactly once and {{text_pair}} at "
            "most once"
        )
    out: list[tuple[str, str]] = []
    for piece in pieces:
        if piece in ("{text}", "{text_pair}", MASK_SLOT):
            lead = ""
            if out and out[-1][0] == "literal" and out[-1][1] != out[-1][1].rstrip():
                lead = " "
                stripped = out[-1][1].rstrip()
                out[-1:] = [("literal", stripped)] if stripped else []
            out.append(({"{text}": "text", "{text_pair}": "text_pair", MASK_SLOT: "mask"}[piece], lead))
        else:
            out.append(("literal", piece))
    return out


def render_pattern(
    tokenizer,
    pattern: str,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    truncation: str = "head",
    head_tokens: int | None = None,
) -> tuple[list[list[int]], None]:
    """Token ids of ``pattern`` filled with each text, with special tokens, at most ``max_length`` long."""
    if truncation not in TRUNCATIONS:
        raise BertlabError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    pieces = parse_pattern(pattern)
    kinds = [k for k, _ in pieces]
    if "text_pair" in kinds and pairs is None:
        raise BertlabError(
            f"pattern {pattern!r} uses {{text_pair}} but the data has no text_pair column; set `text_pair_column`"
        )
    template = special_template(tokenizer)
    encode = lambda xs: tokenizer(xs, add_special_tokens=False)["input_ids"]  # noqa: E731
    literals = [encode(v) if k == "literal" else None for k, v in pieces]
    fixed = len(template.prefix) + len(template.suffix) + sum(len(x) for x in literals if x) + 1
    budget = max_length - fixed
    if budget < (2 if "text_pair" in kinds else 1):
        raise BertlabError(
            f"pattern {pattern!r} takes {fixed} tokens with the special tokens: no room for text within max_length "
            f"{max_length}"
        )
    head_tokens = budget // 4 if head_tokens is None else head_tokens
    mask_id, unk_id = tokenizer.mask_token_id, tokenizer.unk_token_id
    slots = {}
    for kind, values in (("text", texts), ("text_pair", pairs)):
        if kind in kinds:
            lead = pieces[kinds.index(kind)][1]
            slots[kind] = [
                [unk_id if t == mask_id else t for t in ids] for ids in encode([lead + str(v) for v in values])
            ]
    out = []
    for n in range(len(texts)):
        a = slots["text"][n]
        b = slots["text_pair"][n] if "text_pair" in slots else []
        ka, kb = budgets(len(a), len(b), budget) if "text_pair" in slots else (budget, 0)
        kept = {"text": cut(a, ka, truncation, head_tokens), "text_pair": cut(b, kb, truncation, head_tokens)}
        ids = list(template.prefix)
        for (kind, _), lit in zip(pieces, literals):
            ids += lit if kind == "literal" else [mask_id] if kind == "mask" else kept[kind]
        out.append(ids + list(template.suffix))
    return out, None


class PETDataset(torch.utils.data.Dataset):
    """Example ``i`` in every pattern (``pattern_ids``), its ``idx``, its label, and optionally its plain
    text ids (``text``)."""

    def __init__(
        self,
        patterns: list[TokenArrays],
        idx: np.ndarray,
        labels: np.ndarray | None = None,
        text: TokenArrays | None = None,
    ):
        self.patterns, self.idx, self.labels, self.text = patterns, idx, labels, text

    def __len__(self) -> int:
        return len(self.idx)

    def lengths(self) -> np.ndarray:
        return np.max([p.lengths() for p in self.patterns], axis=0)

    def __getitem__(self, i: int) -> dict:
        item = {"pattern_ids": [p.get(i)["input_ids"] for p in self.patterns], "idx": int(self.idx[i])}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        if self.text is not None:
            item["text"] = self.text.get(i)
        return item


class PETCollator:
    """Pads the B·P pattern rows, finds the mask in each, and runs the masker on the plain texts when they are there."""

    def __init__(self, pad_token_id: int, mask_token_id: int, pad_to_multiple_of: int | None = None, masker=None):
        self.pad = PadCollator(pad_token_id, pad_to_multiple_of)
        self.mask_token_id, self.masker = mask_token_id, masker

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad([{"input_ids": ids} for f in features for ids in f["pattern_ids"]])
        batch["mask_pos"] = (batch["input_ids"] == self.mask_token_id).int().argmax(dim=1)
        batch["idx"] = torch.tensor([f["idx"] for f in features])
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        if self.masker is not None and "text" in features[0]:
            batch.update({f"mlm_{k}": v for k, v in self.masker([f["text"] for f in features]).items()})
        return batch


class PETDataModule(ClassificationDataModule):
    def __init__(
        self,
        patterns: list[str] | None = None,
        masker: Callable[[Any], DynamicMasker] | None = None,
        **kwargs,
    ):
        """
        Args:
            patterns: cloze patterns with ``{text}``, optionally ``{text_pair}``, and ``[MASK]`` once;
                every example is rendered with each of them (default: ``["{text} It was [MASK]."]``).
            masker: the masker for PET's auxiliary MLM loss on the training texts, spelled as for
                ``MLMDataModule``: ``class_path: datamodules.maskers.DynamicMasker`` with
                ``init_args: {mlm_probability: 0.15}``; the seed is ``splits.split_seed``. None = no MLM inputs.
            **kwargs: everything ``ClassificationDataModule`` takes (files, source, labels, max_length,
                truncation — applied to the text, never to the pattern —, batch_size counts examples).
        """
        super().__init__(**kwargs)
        self.make_masker = masker  # kept as given: under LightningCLI, ``hparams.masker`` is its config
        if patterns is None:
            patterns = [DEFAULT_PATTERN]
        if not patterns:
            raise BertlabError("give at least one pattern, e.g. '{text} It was [MASK].'")
        for pattern in patterns:
            parse_pattern(pattern)
        self.patterns = list(patterns)

    @cached_property
    def masker(self):
        if self.make_masker is None:
            return None
        return self.make_masker(self.tokenizer, seed=self.splits.split_seed)

    def _pattern_arrays(self, split: str, pattern: str) -> tuple[TokenArrays, bool]:
        h, df = self.hparams, self.frames[split]
        pairs = df["text_pair"].tolist() if "text_pair" in df else None
        key = cache_key(
            kind="pet",
            pattern=pattern,
            data=sources.text_fingerprint(df),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_length=h.max_length,
            truncation=h.truncation,
            head_tokens=h.head_tokens,
        )
        return cached_arrays(
            self.cache_dir,
            key,
            lambda: render_pattern(
                self.tokenizer, pattern, df["text"].tolist(), pairs, h.max_length, h.truncation, h.head_tokens
            ),
            meta={"split": split, "pattern": pattern, "tokenizer": h.tokenizer, "max_length": h.max_length},
        )

    def _dataset(self, split: str) -> PETDataset:
        df = self.frames[split]
        built = [self._pattern_arrays(split, p) for p in self.patterns]
        text = None
        if split == "train" and self.masker is not None:
            text = super()._dataset(split).arrays  # the plain tokenisation, cached as the classifier's
        self.built_now[split] = any(b for _, b in built)
        labels = df["label"].map(self.label2id).to_numpy(np.int64) if "label" in df else None
        return PETDataset([a for a, _ in built], np.arange(len(df)), labels, text)

    @property
    def collator(self) -> PETCollator:
        return PETCollator(
            self.tokenizer.pad_token_id, self.tokenizer.mask_token_id, self.loader.pad_to_multiple_of, self.masker
        )
