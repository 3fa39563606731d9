"""Scoring the MLM corpus once, before training, for the ``selective`` / ``entropy`` maskers.

``MLMDataModule(scorer={...})`` runs one of these over its cached token arrays and stores a float per
token beside them (``tokens/<cache key>/scores-<scorer fingerprint>.npy``), so the scores are keyed
like the token cache and reused while the corpus, the tokenizer and the scorer's *content* (its
weights, not its path) are unchanged.

=============  ============================================================  =========================
``kind``       score per token (``model_b``, ``entropy``: per sentence)      ``model``
=============  ============================================================  =========================
``model_b``    P(important) from Model_b (Gu et al. 2020; ``token_labels``)  a token-classifier export
``entropy``    |H_i − H(s)| or KL of Model_0's task prediction with the      Model_0, a fine-tuned
               word masked (``task_entropy``; ``divergence: kl``)            sequence classifier
``saliency``   gradient × input of a classifier (``token_scoring``)          a sequence classifier
``mlm_entropy`` an MLM's predictive entropy (``token_scoring``)              a masked LM
=============  ============================================================  =========================

A corpus on which nothing scores as important (no P(important) > 0.5; every entropy score 0) is a
``BertlabError`` before training starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from bertlab.core.errors import BertlabError
from bertlab.core.hardware import INFERENCE_PRECISIONS, inference_dtype
from datamodules.scoring_run import remove_parts, run_in_chunks
from datamodules.task_entropy import DIVERGENCES
from datamodules.task_scorer import check_same_tokenizer, check_sequence_classifier, model_fingerprint, scoring_device

KINDS = ("model_b", "entropy", "saliency", "mlm_entropy")
DEFAULT_KIND = {"selective": "model_b", "entropy": "entropy"}
KEYS = {"kind", "model", "divergence", "batch_size", "precision"}


def resolve_scorer(masker: str, scorer: dict | None) -> dict | None:
    """The scorer spec with its defaults, checked when the config is read (no file is opened here)."""
    if not scorer:
        if masker in DEFAULT_KIND:
            raise BertlabError(
                f"the {masker} masker needs `scorer: {{kind: {DEFAULT_KIND[masker]}, model: DIR}}` to score tokens"
            )
        return None
    unknown = set(scorer) - KEYS
    if unknown:
        raise BertlabError(f"scorer: unknown key(s) {sorted(unknown)}; a scorer has {', '.join(sorted(KEYS))}")
    spec = {
        "kind": DEFAULT_KIND.get(masker, "model_b"),
        "divergence": "entropy",
        "batch_size": 64,
        "precision": "auto",
        **scorer,
    }
    if spec["kind"] not in KINDS:
        raise BertlabError(f"scorer: unknown kind {spec['kind']!r}; kinds: {', '.join(KINDS)}")
    if not spec.get("model"):
        raise BertlabError(f"the {masker} masker needs `scorer: {{kind: {spec['kind']}, model: DIR}}` to score tokens")
    if spec["divergence"] not in DIVERGENCES:
        raise BertlabError(f"scorer: divergence must be one of {', '.join(DIVERGENCES)}, got {spec['divergence']!r}")
    if spec["precision"] not in INFERENCE_PRECISIONS:
        raise BertlabError(
            f"scorer: precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {spec['precision']!r}"
        )
    return spec


def scoring_dtype(spec: dict) -> torch.dtype:
    """bf16 autocast for the inference scorers (``model_b``, ``entropy``) where the hardware has bf16
    and ``precision`` is ``auto`` or ``bf16``; saliency needs gradients and stays fp32."""
    if spec["kind"] not in ("model_b", "entropy"):
        return torch.float32
    return inference_dtype(spec.get("precision", "auto"), scoring_device().type)


def scorer_fingerprint(spec: dict) -> str:
    """Keyed by the scorer's content and by the dtype it computes in (fp32 keys as before precision existed)."""
    blob = {k: v for k, v in spec.items() if k not in ("batch_size", "precision")}
    blob["model"] = model_fingerprint(spec["model"])
    if scoring_dtype(spec) != torch.float32:
        blob["dtype"] = "bf16"
    if spec["kind"] in ("model_b", "entropy"):
        blob["unit"] = "sentence"  # scores of whole rows (before per-sentence scoring) are not reused
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def check_scorer(spec: dict, tokenizer, task_labels: Sequence[str] | None) -> None:
    """What the scorer must be, checked where its directory is read."""
    kind, model = spec["kind"], spec["model"]
    if kind in ("entropy", "saliency"):
        check_sequence_classifier(model, task_labels, role=f"{kind} scorer (Model_0)")
    elif kind == "model_b":
        from bertlab.core.hf_loading import read_model_config

        config = read_model_config(model, "the model_b scorer")
        archs = config.get("architectures") or []
        if not any(a.endswith("ForTokenClassification") for a in archs) or len(config.get("id2label", {})) != 2:
            raise BertlabError(
                f"the model_b scorer {model!r} is not a 2-label token classifier (architectures: {archs or 'none'}); "
                "give the export of a TokenTagger stage"
            )
    check_same_tokenizer(tokenizer, model, f"{kind} scorer")


def _parts_dir(spec: dict, arrays) -> str | None:
    """Where finished chunks wait for a resume: beside the token arrays, keyed like the scores file."""
    directory = getattr(arrays, "directory", None)
    return os.path.join(directory, f"scores-{scorer_fingerprint(spec)}.parts") if directory else None


def score_corpus(spec: dict, tokenizer, arrays, jieba_words: bool = False) -> np.ndarray:
    """A float32 score per token of ``arrays`` (``TokenArrays``), zero at specials.

    ``model_b`` and ``entropy`` score each sentence on its own (``datamodules.sentence_scorers``); ``saliency``
    and ``mlm_entropy`` score whole rows. Every kind runs in resumable chunks on all cores
    (``datamodules.scoring_run``): a killed run resumes from the chunks it finished, which are removed here
    once the whole corpus is scored."""
    from bertlab.core.hf_loading import from_pretrained

    kind, dtype = spec["kind"], scoring_dtype(spec)
    if kind in ("model_b", "entropy"):
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        from datamodules.sentence_scorers import EntropyScorer, ModelBScorer

        auto = AutoModelForTokenClassification if kind == "model_b" else AutoModelForSequenceClassification
        model = from_pretrained(auto, spec["model"], what=f"the {kind} scorer")[0]
        if kind == "model_b":
            scorer = ModelBScorer(model, tokenizer, dtype, spec["batch_size"], jieba_words)
        else:
            scorer = EntropyScorer(model, tokenizer, dtype, spec["batch_size"], jieba_words, spec["divergence"])
    else:
        scorer = _RowScorer(spec, tokenizer, from_pretrained)
    parts = _parts_dir(spec, arrays)
    flat = run_in_chunks(arrays.lengths(), lambda lo, hi: scorer(arrays, lo, hi), parts, desc=f"{kind} scores")
    remove_parts(parts)
    return flat.astype(np.float32, copy=False)


class _RowScorer:
    """``saliency`` and ``mlm_entropy``: whole rows, ``batch_size`` at a time (``datamodules.token_scoring``)."""

    def __init__(self, spec: dict, tokenizer, from_pretrained):
        from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

        from datamodules.batching import PadCollator

        auto = AutoModelForSequenceClassification if spec["kind"] == "saliency" else AutoModelForMaskedLM
        self.model = from_pretrained(auto, spec["model"], what=f"the {spec['kind']} scorer")[0].eval()
        self.kind, self.batch_size = spec["kind"], spec["batch_size"]
        self.collate, self.tokenizer = PadCollator(tokenizer.pad_token_id), tokenizer
        self.specials = list(tokenizer.all_special_ids)

    def __call__(self, arrays, lo: int, hi: int) -> np.ndarray:
        from datamodules.token_scoring import entropy_scores, importance_scores

        out = np.zeros(int(arrays.offsets[hi] - arrays.offsets[lo]), dtype=np.float32)
        for start in range(lo, hi, self.batch_size):
            rows = list(range(start, min(start + self.batch_size, hi)))
            batch = self.collate([{"input_ids": arrays.get(i)["input_ids"]} for i in rows])
            if self.kind == "saliency":
                scores = importance_scores(self.model, batch, self.specials)
            else:
                scores = entropy_scores(self.model, batch, self.tokenizer.mask_token_id, self.specials)
            for j, i in enumerate(rows):
                a, b = int(arrays.offsets[i] - arrays.offsets[lo]), int(arrays.offsets[i + 1] - arrays.offsets[lo])
                out[a:b] = scores[j, : b - a].detach().numpy()
        return out


def check_scores(spec: dict, flat: np.ndarray) -> None:
    """Nothing important on the whole corpus means the masker would degrade to random: refuse it."""
    threshold = 0.5 if spec["kind"] == "model_b" else 0.0
    block = 1 << 20  # ``flat`` may be a FileArray: read it a block at a time, up to the first important token
    if not any((flat[i : i + block] > threshold).any() for i in range(0, len(flat), block)):
        what = "P(important) > 0.5 from Model_b" if spec["kind"] == "model_b" else f"a non-zero {spec['kind']} score"
        raise BertlabError(
            f"no token of the MLM corpus gets {what} ({spec['model']!r}); the scorer marks nothing as important, "
            "so selective masking would be random masking: check the scorer and its task"
        )
