"""The accuracy anchor: what a user gets from HF Trainer's plain fine-tune, on bertlab's own fine-food split.

MiniLM-L6-H384 (``AutoModelForSequenceClassification``, a new linear head on the pooler), the reviews cut to
``--max-length`` tokens, ``DataCollatorWithPadding``, HF Trainer's AdamW with linear decay, lr 5e-5, weight
decay 0.01, warmup 10 %, batch 32, ``--epochs`` epochs, no evaluation during training and no checkpoint
selection (the plain recipe: the last epoch's model is tested). The train/val/test frames are the ones
bertlab trains on (``datamodules.splits.Splits(source="fine_food", val_fraction=0.1)``), so the 1,000 test
reviews are the same. bf16 autocast where the CPU has it (as bertlab's ``precision: auto``), else fp32.
Writes ``results/hf_anchor.json``: per seed test accuracy, their mean ± std, the settings and provenance.

    python benchmarks/hf_trainer_anchor.py --seeds 0,1,2 --out results/hf_anchor.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def run_seed(seed: int, frames: dict, ns, bf16: bool) -> float:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from bertlab.core.models import resolve_model_dir

    path = resolve_model_dir("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    labels = sorted(set(frames["train"]["label"]) | set(frames["test"]["label"]))

    def encode(df):
        enc = tokenizer(list(df["text"]), truncation=True, max_length=ns.max_length)
        ids = [labels.index(y) for y in df["label"]]
        return [{**{k: v[i] for k, v in enc.items()}, "labels": ids[i]} for i in range(len(df))]

    train, test = encode(frames["train"]), encode(frames["test"])
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=ns.epochs,
            learning_rate=5e-5,
            weight_decay=0.01,
            warmup_steps=0.1,  # transformers 5: a float below 1 is a ratio of the training steps
            per_device_train_batch_size=32,
            per_device_eval_batch_size=64,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            seed=seed,
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
        trainer.train()
        logits = trainer.predict(test).predictions
    preds = np.asarray(logits).argmax(-1)
    return float((preds == np.array([t["labels"] for t in test])).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--limit", type=int, help="smoke form: this many train and test reviews")
    parser.add_argument("--out", default="results/hf_anchor.json")
    ns = parser.parse_args(argv)
    from bertlab.allocator import allocator_in_use
    from bertlab.core.hardware import cpu_has_bf16
    from bertlab.core.provenance import provenance
    from datamodules.splits import Splits

    frames = Splits(source="fine_food", val_fraction=0.1).read()
    if ns.limit:
        frames = {k: v.sample(n=min(ns.limit, len(v)), random_state=0) for k, v in frames.items()}
    bf16 = cpu_has_bf16()[0]
    seeds = [int(s) for s in ns.seeds.split(",")]
    accs = {str(s): run_seed(s, frames, ns, bf16) for s in seeds}
    values = list(accs.values())
    record = {
        "what": "HF Trainer's plain fine-tune of MiniLM-L6-H384 on bertlab's fine-food split (last epoch tested)",
        "settings": {"epochs": ns.epochs, "max_length": ns.max_length, "lr": 5e-5, "batch_size": 32},
        "train_reviews": len(frames["train"]),
        "test_reviews": len(frames["test"]),
        "test/acc": {"seeds": accs, "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}
        if len(values) > 1
        else {"seeds": accs, "mean": values[0], "std": 0.0},
        "provenance": provenance("bf16-mixed" if bf16 else "32-true", allocator_in_use()),
    }
    os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
    with open(ns.out, "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record["test/acc"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
