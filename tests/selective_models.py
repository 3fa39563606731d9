"""Tiny Model_0 / Model_b directories for the selective-masking tests, built from the tiny BERT fixture."""

from __future__ import annotations

import pandas as pd
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertForTokenClassification


def save_classifier(
    out_dir: str,
    base_dir: str,
    labels=("neg", "pos"),
    train_csv: str | None = None,
    steps: int = 0,
    initializer_range: float = 0.02,
) -> str:
    """A ``BertForSequenceClassification`` over the tiny BERT's vocabulary, optionally trained ``steps`` steps."""
    tok = AutoTokenizer.from_pretrained(base_dir)
    id2label = dict(enumerate(labels))
    config = BertConfig.from_pretrained(
        base_dir, num_labels=len(labels), id2label=id2label, initializer_range=initializer_range
    )
    config.label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    if steps:
        df = pd.read_csv(train_csv)
        y = torch.tensor([labels.index(v) for v in df["label"]])
        enc = tok(df["text"].tolist(), padding=True, truncation=True, max_length=32, return_tensors="pt")
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            b = torch.randint(0, len(y), (32,), generator=g)
            loss = model(input_ids=enc["input_ids"][b], attention_mask=enc["attention_mask"][b], labels=y[b]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def save_token_tagger(out_dir: str, base_dir: str, seed: int = 0) -> str:
    """A random 2-label ``BertForTokenClassification`` (a stand-in Model_b export)."""
    tok = AutoTokenizer.from_pretrained(base_dir)
    config = BertConfig.from_pretrained(base_dir, num_labels=2, id2label={0: "other", 1: "important"})
    config.label2id = {"other": 0, "important": 1}
    torch.manual_seed(seed)
    BertForTokenClassification(config).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
