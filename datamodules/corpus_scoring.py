"""Scoring the MLM corpus once, before training, for the ``selective`` / ``entropy`` maskers.

``MLMDataModule(scorer={...})`` runs one of these over its cached token arrays and stores a float per
token beside them (``tokens/<cache key>/scores-<scorer fingerprint>.npy``), so the scores are keyed
like the token cache and reused while the corpus, the tokenizer and the scorer's *content* (its
weights, not its path) are unchanged.

=============  ============================================================  =========================
``kind``       score per token                                               ``model``
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
from collections.abc import Sequence

import numpy as np
import torch

from bertlab.core.errors import BertlabError
from bertlab.core.hardware import INFERENCE_PRECISIONS, inference_dtype
from datamodules.buffer_rule import continuation_table, continuation_word_ids
from datamodules.task_entropy import DIVERGENCES, task_entropy_scores
from datamodules.task_scorer import check_same_tokenizer, check_sequence_classifier, classifier_probs, model_fingerprint

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
    return inference_dtype(spec.get("precision", "auto"))


def scorer_fingerprint(spec: dict) -> str:
    """Keyed by the scorer's content and by the dtype it computes in (fp32 keys as before precision existed)."""
    blob = {k: v for k, v in spec.items() if k not in ("batch_size", "precision")}
    blob["model"] = model_fingerprint(spec["model"])
    if scoring_dtype(spec) != torch.float32:
        blob["dtype"] = "bf16"
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


def _word_ids(ids: np.ndarray, specials: np.ndarray, continuation: np.ndarray, jieba_words) -> list[int]:
    content = ~np.isin(ids, specials)
    if jieba_words is not None:
        return [int(w) if c else -1 for w, c in zip(jieba_words, content)]
    words = continuation_word_ids(ids.tolist(), continuation)
    return [w if c else -1 for w, c in zip(words, content)]


def score_corpus(spec: dict, tokenizer, arrays, jieba_words: bool = False) -> np.ndarray:
    """A float32 score per token of ``arrays`` (``TokenArrays``), zero at specials."""
    from bertlab.core.hf_loading import from_pretrained
    from datamodules.batching import PadCollator
    from datamodules.token_scoring import entropy_scores, importance_scores

    kind, dtype = spec["kind"], scoring_dtype(spec)
    out = np.zeros(int(arrays.offsets[-1]), dtype=np.float32)
    specials = np.asarray(tokenizer.all_special_ids)
    if kind == "entropy":
        from transformers import AutoModelForSequenceClassification

        model = from_pretrained(AutoModelForSequenceClassification, spec["model"], what=f"the {kind} scorer")[0].eval()
        prob_fn = classifier_probs(model, dtype)
        continuation = continuation_table(tokenizer)
        for i in range(len(arrays)):
            row = arrays.get(i)
            words = _word_ids(
                row["input_ids"], specials, continuation, row.get("token_type_ids") if jieba_words else None
            )
            out[arrays.offsets[i] : arrays.offsets[i + 1]] = task_entropy_scores(
                prob_fn, row["input_ids"], words, tokenizer.mask_token_id, spec["divergence"]
            )
        return out
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = {
        "model_b": AutoModelForTokenClassification,
        "saliency": AutoModelForSequenceClassification,
        "mlm_entropy": AutoModelForMaskedLM,
    }[kind]
    model = from_pretrained(auto, spec["model"], what=f"the {kind} scorer")[0].eval()
    collate = PadCollator(tokenizer.pad_token_id)
    for lo in range(0, len(arrays), spec["batch_size"]):
        rows = list(range(lo, min(lo + spec["batch_size"], len(arrays))))
        batch = collate([{"input_ids": arrays.get(i)["input_ids"]} for i in rows])
        if kind == "model_b":
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores = torch.softmax(logits.float(), -1)[..., 1]
            scores = scores.masked_fill(torch.isin(batch["input_ids"], torch.as_tensor(specials)), 0.0)
        elif kind == "saliency":
            scores = importance_scores(model, batch, specials.tolist())
        else:
            scores = entropy_scores(model, batch, tokenizer.mask_token_id, specials.tolist())
        for j, i in enumerate(rows):
            out[arrays.offsets[i] : arrays.offsets[i + 1]] = scores[j, : arrays.offsets[i + 1] - arrays.offsets[i]]
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
