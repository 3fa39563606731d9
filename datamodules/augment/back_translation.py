"""Back-translation: source → pivot → source through two local seq2seq models (Sennrich et al.
2016, "Improving Neural Machine Translation Models with Monolingual Data"; as paraphrasing for
classification in Xie et al. 2020, UDA, "Unsupervised Data Augmentation for Consistency
Training", which samples rather than beam-searches, as Edunov et al. 2018 recommend).

Two decoding modes. ``do_sample=True`` (default): each of the ``n_aug`` variants is one sampled
pivot and one sampled return translation (temperature, top-k, top-p). Each row samples with its
own generator seeded from ``(sampling_seed, text, variant)``, so a text's variants do not depend
on the batch it falls in. ``do_sample=False``: beam search, the ``n_aug`` best pivots each
translated back with beam search (needs ``num_beams ≥ n_aug``). An empty translation falls back
to the original text.

Translation is the expensive step, so the result does not depend on the call's ``seed``: a text's
variants are a function of the models and settings alone, computed once and, with ``cache_dir``,
kept in ``cache_dir/back_translation.sqlite3`` under sha256(fingerprint, text), where the
fingerprint holds both model directories' identities (path, file sizes, mtimes) and every
decoding setting. A re-run translates only texts it has not seen.
"""

from __future__ import annotations

import json
import os
import sqlite3

from bertlab.core.errors import BertlabError
from bertlab.core.fingerprint import dir_identity, fingerprint, stable_hash
from bertlab.core.models import resolve_model_dir

from .base import Augmenter, check_positive, check_rate

VERSION = 1
_MISSING = (
    "back_translation needs two local seq2seq model directories: forward_model_dir (source→pivot) and "
    "backward_model_dir (pivot→source); none ships offline — save a pair such as Helsinki-NLP/opus-mt-en-de "
    "and opus-mt-de-en with save_pretrained on a machine with internet access and point these settings at them"
)


class BackTranslation(Augmenter):
    def __init__(
        self,
        forward_model_dir: str | None = None,
        backward_model_dir: str | None = None,
        n_aug: int = 1,
        batch_size: int = 16,
        num_beams: int = 1,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.95,
        sampling_seed: int = 0,
        cache_dir: str | None = None,
        max_length: int = 128,
        device: str = "cpu",
    ):
        missing = [
            n
            for n, d in [("forward_model_dir", forward_model_dir), ("backward_model_dir", backward_model_dir)]
            if d is None
        ]
        if missing:
            raise BertlabError(f"{_MISSING} (missing: {', '.join(missing)})")
        self.dirs = {
            "forward": resolve_model_dir(forward_model_dir, "back_translation forward_model_dir"),
            "backward": resolve_model_dir(backward_model_dir, "back_translation backward_model_dir"),
        }
        self.n_aug = check_positive("n_aug", n_aug)
        self.batch_size = check_positive("batch_size", batch_size)
        self.num_beams = check_positive("num_beams", num_beams)
        self.max_length = check_positive("max_length", max_length)
        if do_sample and num_beams != 1:
            raise BertlabError(
                f"back_translation samples one token at a time: with do_sample=True set num_beams=1 (got {num_beams})"
            )
        if not do_sample and num_beams < n_aug:
            raise BertlabError(
                f"back_translation with beam search needs num_beams ≥ n_aug to give {n_aug} variants (got "
                f"num_beams={num_beams})"
            )
        if not temperature > 0 or not isinstance(top_k, int) or top_k < 0 or not top_p > 0:
            raise BertlabError(
                f"back_translation needs temperature > 0, top_k ≥ 0 (0 = off) and top_p in (0, 1]; "
                f"got temperature={temperature}, top_k={top_k}, top_p={top_p}"
            )
        self.do_sample, self.temperature, self.top_k = bool(do_sample), float(temperature), top_k
        self.top_p, self.sampling_seed = check_rate("top_p", top_p), int(sampling_seed)
        self.cache_dir, self.device = cache_dir, device
        self._models: dict[str, tuple] = {}

    def fingerprint(self) -> str:
        decoding = (
            f"do_sample={self.do_sample},temperature={self.temperature},top_k={self.top_k},top_p={self.top_p},"
            f"sampling_seed={self.sampling_seed}"
            if self.do_sample
            else f"num_beams={self.num_beams}"
        )
        return (
            f"back_translation/v{VERSION}(forward={dir_identity(self.dirs['forward'])},"
            f"backward={dir_identity(self.dirs['backward'])},n_aug={self.n_aug},{decoding},max_length={self.max_length})"
        )

    def __call__(self, texts: list[str], seed: int) -> list[list[str]]:
        """``seed`` is accepted for the common interface and not used (see the module docstring)."""
        todo = list(dict.fromkeys(t for t in texts if t.strip()))
        fp = self.fingerprint()
        keys = {t: fingerprint(fp, t, sep="\0", length=64) for t in todo}
        with self._cache() as db:
            done = db.get(list(keys.values()))
            todo = [t for t in todo if keys[t] not in done]
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                results = self._round_trip(chunk)
                db.put({keys[t]: r for t, r in zip(chunk, results)})
                done.update({keys[t]: r for t, r in zip(chunk, results)})
        return [done[keys[t]] if t in keys else [t] * self.n_aug for t in texts]

    def _round_trip(self, texts: list[str]) -> list[list[str]]:
        n = self.n_aug
        if self.do_sample:
            rows = [t for t in texts for _ in range(n)]
            pivots = self._translate(
                "forward", rows, [stable_hash(self.sampling_seed, "fwd", t, k) for t in texts for k in range(n)]
            )
            back = self._translate(
                "backward", pivots, [stable_hash(self.sampling_seed, "bwd", t, k) for t in texts for k in range(n)]
            )
        else:
            back = self._translate("backward", self._translate("forward", texts, None, n), None)
        back = [b if b.strip() else t for b, t in zip(back, [t for t in texts for _ in range(n)])]
        return [back[i * n : (i + 1) * n] for i in range(len(texts))]

    def _translate(self, direction: str, texts: list[str], seeds: list[int] | None, num_return: int = 1) -> list[str]:
        """Translate in batches of ``batch_size`` rows; with ``seeds``, sample each row with its own generator."""
        import torch

        tokenizer, model = self._load(direction)
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(
                self.device
            )
            extra = {}
            if seeds is not None:
                extra["logits_processor"] = [
                    _row_sampler(seeds[start : start + self.batch_size], self.temperature, self.top_k, self.top_p)
                ]
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    do_sample=False,
                    num_beams=1 if seeds is not None else self.num_beams,
                    num_return_sequences=num_return,
                    max_new_tokens=self.max_length,
                    **extra,
                )
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    def _load(self, direction: str):
        if direction not in self._models:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            path = self.dirs[direction]
            self._models[direction] = (
                AutoTokenizer.from_pretrained(path),
                AutoModelForSeq2SeqLM.from_pretrained(path).to(self.device).eval(),
            )
        return self._models[direction]

    def _cache(self):
        return _SqliteCache(os.path.join(self.cache_dir, "back_translation.sqlite3") if self.cache_dir else None)


class _SqliteCache:
    """key → JSON list of variants; without a path, a dict that lives for one call."""

    def __init__(self, path: str | None):
        self.path, self.db = path, None

    def __enter__(self):
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("CREATE TABLE IF NOT EXISTS bt (key TEXT PRIMARY KEY, variants TEXT NOT NULL)")
        return self

    def __exit__(self, *exc):
        if self.db is not None:
            self.db.close()

    def get(self, keys: list[str]) -> dict[str, list[str]]:
        found = {}
        for start in range(0, len(keys) if self.db else 0, 500):
            part = keys[start : start + 500]
            rows = self.db.execute(f"SELECT key, variants FROM bt WHERE key IN ({','.join('?' * len(part))})", part)
            found.update({k: json.loads(v) for k, v in rows})
        return found

    def put(self, items: dict[str, list[str]]) -> None:
        if self.db is not None:
            self.db.executemany(
                "INSERT OR REPLACE INTO bt VALUES (?, ?)",
                [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()],
            )
            self.db.commit()


def _row_sampler(seeds: list[int], temperature: float, top_k: int, top_p: float):
    """A logits processor that samples each row's next token with that row's own generator and
    leaves only it finite, so greedy decoding picks it (HF's sampling uses the global RNG)."""
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator().manual_seed(s & (2**63 - 1)) for s in seeds]

        def __call__(self, input_ids, scores):
            logits = scores.float().cpu() / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1.0:
                sorted_logits, order = logits.sort(-1, descending=True)
                before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)
                logits = logits.scatter(-1, order, sorted_logits.masked_fill(before >= top_p, float("-inf")))
            probs = logits.softmax(-1)
            picks = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)]
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(len(picks)), torch.cat(picks).to(scores.device)] = 0.0
            return out

    return RowSampler()
