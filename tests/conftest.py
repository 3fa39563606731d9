"""Shared fixtures: a tiny random BERT with its own WordPiece vocabulary, and small labelled data.

The tiny model is saved with ``save_pretrained`` and read back through the same ``Auto*``
code paths the real MiniLM goes through. Like MiniLM it is a bare ``BertModel`` (no MLM head).
"""

from __future__ import annotations

import os
import random

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

POSITIVE = ["great", "lovely", "tasty", "excellent", "delicious", "perfect", "fresh", "wonderful"]
NEGATIVE = ["awful", "stale", "bland", "terrible", "broken", "soggy", "rancid", "disappointing"]
NEUTRAL = [
    "the",
    "coffee",
    "tea",
    "snack",
    "box",
    "arrived",
    "was",
    "and",
    "very",
    "product",
    "flavour",
    "my",
    "kids",
    "bought",
    "this",
    "again",
    "price",
    "cookies",
    "really",
    "quite",
    "it",
    "is",
    "unbelievably",
]


def make_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` short reviews whose label is told by one sentiment word among filler."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.choices(NEUTRAL, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        texts.append(" ".join(words) + rng.choice([".", "!", ""]))
        labels.append(label)
    return texts, labels


def tiny_vocab(texts: list[str], vocab_size: int, specials: list[str]) -> dict[str, int]:
    """A WordPiece vocabulary built the same way in every process: the specials, every character alone
    and as a ``##`` piece, then whole words by frequency (ties alphabetical) while there is room, then
    ``[unusedN]`` up to ``vocab_size``.
    (``tokenizers``' WordPiece trainer breaks ties in hash order, which differs between processes: the
    tiny model's tokens, and so what it learned, changed from run to run.)"""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    if texts and not isinstance(texts[0], str):  # a batch of lists, as tokenizers' trainer accepts
        texts = [t for batch in texts for t in batch]
    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    tokens = list(specials) + chars + [f"##{c}" for c in chars]
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(tokens) >= vocab_size:
            break
        if word not in tokens:
            tokens.append(word)
    tokens = list(dict.fromkeys(tokens))
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]  # the size asked for, as BERT pads its own
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_bert(
    out_dir: str, texts: list[str], hidden: int = 32, layers: int = 2, vocab_size: int = 200, max_len: int = 64
) -> str:
    """A deterministic WordPiece vocab for ``texts``, saved with a random tiny ``BertModel`` + fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(vocab=tiny_vocab(texts, vocab_size, specials), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_len,
    )
    fast.save_pretrained(out_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_len,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_texts():
    return make_texts(400, seed=0)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_texts):
    """A 2-layer, 32-wide random BERT and a ~200-piece WordPiece vocab, saved like a hub checkpoint."""
    return build_tiny_bert(str(tmp_path_factory.mktemp("tiny_bert")), tiny_texts[0])


@pytest.fixture(scope="session")
def tiny_csvs(tmp_path_factory):
    """train/val/test CSVs (text,label) with a learnable signal; val/test never overlap train."""
    root = tmp_path_factory.mktemp("tiny_data")
    paths = {}
    for split, n, seed in [("train", 160, 1), ("val", 40, 2), ("test", 40, 3)]:
        texts, labels = make_texts(n, seed)
        path = root / f"{split}.csv"
        pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
        paths[split] = str(path)
    return paths


def quiet_trainer(**kwargs):
    """A CPU ``pl.Trainer`` with no logger, checkpoints, progress bar or summary; ``kwargs`` add or override."""
    import pytorch_lightning as pl

    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return pl.Trainer(**{**defaults, **kwargs})
