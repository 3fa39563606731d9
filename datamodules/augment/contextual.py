"""Contextual word substitution with a masked language model (Kobayashi 2018, "Contextual
Augmentation: Words with Paradigmatic Relations", NAACL; with BERT as the LM as in Wu et al.
2019, "Conditional BERT Contextual Augmentation", without the label conditioning).

Per variant, ``max(1, int(rate·n))`` of a text's n words are chosen, each replaced by one mask
token, and the masked texts of a whole batch go through a local ``AutoModelForMaskedLM`` in one
forward pass (all chosen words of a variant are masked at once, a cheaper variant of the
paper's one-word-at-a-time prediction). For each mask a replacement is sampled from the top-k
whole-word vocabulary entries, probabilities renormalised over those k, the original word left
out. Whole word means: not a special token, not a ``##`` continuation piece (WordPiece), or
carrying the word-start marker ``▁``/``Ġ`` (SentencePiece/BPE), and made of letters only, so
punctuation, numbers and ``[unused]`` entries are never proposed. A capitalised word gets a
capitalised replacement; texts with fewer than two words come back unchanged.
"""

from __future__ import annotations

from bertlab.core.errors import BertlabError
from bertlab.core.fingerprint import dir_identity
from bertlab.core.models import resolve_model_dir

from .base import Augmenter, check_positive, check_rate, text_rng
from .words import LANGUAGES, is_word, join_words, match_case, split_words

VERSION = 1


class ContextualSubstitution(Augmenter):
    """``model_dir``: a local checkpoint ``AutoModelForMaskedLM`` can load (a bare encoder gets a
    fresh, seeded MLM head, which is only good for tests). ``rate``: the share of words masked per
    variant, at least one. ``language``: how words are found ("zh": jieba words, each replaced by
    one vocabulary entry, a single character for Chinese BERT vocabularies)."""

    def __init__(
        self,
        model_dir: str,
        n_aug: int = 4,
        rate: float = 0.15,
        top_k: int = 10,
        batch_size: int = 32,
        device: str = "cpu",
        language: str = "en",
        max_length: int = 256,
    ):
        self.model_dir = resolve_model_dir(model_dir, "contextual augmentation model_dir")
        self.n_aug = check_positive("n_aug", n_aug)
        self.rate = check_rate("rate", rate)
        self.top_k = check_positive("top_k", top_k)
        self.batch_size = check_positive("batch_size", batch_size)
        self.max_length = check_positive("max_length", max_length)
        if language not in LANGUAGES:
            raise BertlabError(
                f"contextual augmentation language {language!r} is not supported; use one of {list(LANGUAGES)}"
            )
        self.language, self.device = language, device
        self._loaded = None

    def fingerprint(self) -> str:
        return (
            f"contextual/v{VERSION}(model={dir_identity(self.model_dir)},n_aug={self.n_aug},rate={self.rate},"
            f"top_k={self.top_k},language={self.language},max_length={self.max_length})"
        )

    def __call__(self, texts: list[str], seed: int) -> list[list[str]]:
        out = [[text] * self.n_aug for text in texts]
        rows = []  # (text index, copy index, tokens, chosen word positions)
        rngs = {}
        for i, text in enumerate(texts):
            tokens = split_words(text, self.language)
            positions = [p for p, (_, t) in enumerate(tokens) if is_word(t)]
            if len(positions) < 2:
                continue
            rngs[i] = rng = text_rng(seed, text)
            m = max(1, int(self.rate * len(positions)))
            rows += [(i, k, tokens, sorted(rng.sample(positions, m))) for k in range(self.n_aug)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            for (i, k, tokens, chosen), proposals in zip(chunk, self._propose(chunk)):
                new = [list(t) for t in tokens]
                for p, candidates in zip(chosen, proposals):
                    original = tokens[p][1]
                    candidates = [(w, pr) for w, pr in candidates if w.casefold() != original.casefold()][: self.top_k]
                    if candidates:
                        word = rngs[i].choices([w for w, _ in candidates], weights=[pr for _, pr in candidates])[0]
                        new[p][1] = match_case(original, word)
                out[i][k] = join_words(new)
        return out

    def _propose(self, chunk) -> list[list[list[tuple[str, float]]]]:
        """For each row, for each of its masks: whole-word candidates (word, probability), best first."""
        import torch

        tokenizer, model, allowed, words = self._load()
        masked = []
        for _, _, tokens, chosen in chunk:
            row = [list(t) for t in tokens]
            for p in chosen:
                row[p][1] = tokenizer.mask_token
            masked.append(join_words(row))
        enc = tokenizer(masked, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(
            self.device
        )
        with torch.no_grad():
            logits = model(**enc).logits
        is_mask = enc["input_ids"] == tokenizer.mask_token_id
        probs = logits[is_mask].float().masked_fill(~allowed, float("-inf")).softmax(-1)
        # a few spare candidates, since the original word (in any casing) is dropped afterwards
        top = probs.topk(min(self.top_k + 8, int(allowed.sum())))
        candidates = [
            [(words[t], p) for t, p in zip(ids, ps)] for ids, ps in zip(top.indices.tolist(), top.values.tolist())
        ]
        out, at = [], 0
        for n in is_mask.sum(1).tolist():  # masks cut off by truncation leave their words unchanged
            out.append(candidates[at : at + n])
            at += n
        return out

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForMaskedLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            if tokenizer.mask_token is None:
                raise BertlabError(
                    f"the tokenizer in {self.model_dir} has no mask token, so it cannot serve a masked "
                    f"language model; point model_dir at a BERT-style (MLM) checkpoint"
                )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # a checkpoint without an MLM head gets the same head every time
                model = AutoModelForMaskedLM.from_pretrained(self.model_dir).to(self.device).eval()
            words = _whole_words(tokenizer)
            allowed = torch.zeros(model.get_output_embeddings().weight.shape[0], dtype=torch.bool)
            allowed[[i for i in words if i < len(allowed)]] = True
            self._loaded = tokenizer, model, allowed.to(self.device), words
        return self._loaded


def _whole_words(tokenizer) -> dict[int, str]:
    """Vocabulary ids that stand for a whole word made of letters → that word."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids)
    if any(t.startswith("##") for t in vocab):
        marker = None
    else:
        marker = next((m for m in ("▁", "Ġ") if any(t.startswith(m) for t in vocab)), "")
    words = {}
    for token, i in vocab.items():
        if i in special or (marker is None and token.startswith("##")) or (marker and not token.startswith(marker)):
            continue
        word = token[len(marker) :] if marker else token
        if is_word(word):
            words[i] = word
    return words
