"""The task classifier that scores tokens (Model_0 of Gu et al. 2020), checked once where it is read.

Selective masking's labels and the entropy scores both come from a fine-tuned sequence classifier:
a bertlab classifier export with the ``cls`` head (HF-native ``*ForSequenceClassification``) or any
such ``save_pretrained`` directory. It must be a sequence classifier and its labels must be the
task's, in the task's order; anything else is a ``BertlabError`` before any scoring starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch

from bertlab.core.errors import BertlabError
from bertlab.core.hf_loading import read_model_config
from bertlab.core.models import resolve_model_dir

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def model_fingerprint(name_or_path: str) -> str:
    """Content hash of a model directory's config and weights: retraining into the same path changes it."""
    path = resolve_model_dir(name_or_path)
    h = hashlib.sha256()
    for name in ("config.json", *WEIGHT_FILES):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            h.update(name.encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def check_sequence_classifier(name_or_path: str, labels: Sequence[str] | None = None, role: str = "scorer") -> None:
    """Refuse a directory that is not a sequence classifier, or whose labels differ from ``labels``."""
    config = read_model_config(name_or_path, f"the {role}")
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise BertlabError(
            f"the {role} {name_or_path!r} is not a sequence classifier (architectures: {architectures or 'none'}); "
            "give a fine-tuned classifier export (the `cls` head exports *ForSequenceClassification)"
        )
    if labels is None:
        return
    id2label = config.get("id2label") or {}
    theirs = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    if theirs != [str(x) for x in labels]:
        raise BertlabError(
            f"the {role} {name_or_path!r} predicts labels {theirs}, but the task's labels are {list(labels)}; "
            "score with a classifier fine-tuned on this task"
        )


def load_sequence_classifier(name_or_path: str, labels: Sequence[str] | None = None, role: str = "scorer"):
    """The checked classifier, in eval mode, on ``scoring_device()``."""
    from transformers import AutoModelForSequenceClassification

    from bertlab.core.hf_loading import from_pretrained

    check_sequence_classifier(name_or_path, labels, role)
    model, _ = from_pretrained(AutoModelForSequenceClassification, name_or_path, what=f"the {role}")
    return model.eval().to(scoring_device())


def scoring_device() -> torch.device:
    """Where the scorers run: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def classifier_probs(model, dtype: torch.dtype = torch.float32):
    """``prob_fn(input_ids, attention_mask) -> softmax probabilities`` (fp32, on the CPU) for an HF sequence
    classifier on any device (the inputs are moved to it); ``dtype`` bf16 runs the forward pass under bf16
    autocast (``bertlab.core.hardware.inference_dtype``)."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def prob_fn(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        return torch.softmax(logits.float(), dim=-1).cpu()

    return prob_fn


def check_same_tokenizer(tokenizer, name_or_path: str, role: str) -> None:
    """The scorer must read the token ids the data holds: the same vocabulary and special tokens."""
    from bertlab.core.models import load_tokenizer

    theirs = load_tokenizer(name_or_path)
    if theirs.get_vocab() != tokenizer.get_vocab() or theirs.all_special_ids != tokenizer.all_special_ids:
        raise BertlabError(
            f"the {role} {name_or_path!r} has another vocabulary than the data's tokenizer; "
            "fine-tune it from the same encoder as the model being trained"
        )
