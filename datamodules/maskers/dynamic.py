"""Token-level random masking: ``DynamicMasker`` (fresh masks every batch) and ``StaticMasker`` (BERT's
fixed copies); the 80/10/10 corruption and the padding every masker shares.
"""

from __future__ import annotations

import hashlib

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import get_worker_info

from bertlab.core.errors import BertlabError


def _mix(*ints: int) -> int:
    """A stable 63-bit seed from integers (Python's ``hash`` is not meant for this)."""
    digest = hashlib.blake2b("/".join(map(str, ints)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _top_k(keys: torch.Tensor, tiebreak: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the ``k`` eligible positions with the largest ``keys``; ties go by ``tiebreak``."""
    keys = keys.masked_fill(~eligible, float("-inf"))
    perm = tiebreak.argsort(dim=1)
    order = perm.gather(1, keys.gather(1, perm).argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(keys.shape[1]).expand_as(order))
    return eligible & (rank < k.unsqueeze(1))


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
