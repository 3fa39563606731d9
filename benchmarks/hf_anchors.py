"""What a user runs instead of bertlab, timed the way ``callbacks.step_timer.StepTimer`` times bertlab.

* ``mlm``: the HF ``run_mlm`` recipe — the fine-food train reviews tokenised whole, concatenated and
  cut into 128-token blocks (``group_texts``), ``DataCollatorForLanguageModeling(mlm_probability=0.15)``,
  ``AutoModelForMaskedLM`` (MiniLM with a fresh MLM head, logits over the whole vocabulary at every
  position), HF ``Trainer`` with its default optimizer.
* ``classify``: HF ``Trainer`` + ``DataCollatorWithPadding`` + length grouping (v4's
  ``group_by_length``, v5's ``train_sampling_strategy="group_by_length"``), reviews cut to 128 tokens.

Both use ``bf16=True`` for ``--precision bf16`` (autocast, as Lightning's ``bf16-mixed``), the same
lr / weight decay / warmup as bertlab's configs, batch 32, no evaluation, logging or saving. Each
step is timed from the end of the previous one (data, forward, backward, optimizer); the first
``--warmup`` steps are left out. Writes the same JSON fields as ``StepTimer``.

    python benchmarks/hf_anchors.py mlm --precision bf16 --steps 30 --out runs/bench/hf_mlm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from callbacks.step_timer import summarise_steps  # noqa: E402

SETTINGS = {  # the values of configs/mlm/fine_food_tapt.yaml and configs/classify/fine_food.yaml
    "mlm": {"lr": 1e-4, "weight_decay": 0.01, "warmup_ratio": 0.06, "max_length": 128},
    "classify": {"lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1, "max_length": 128},
}


def mlm_dataset(tokenizer, texts: list[str], block: int):
    from datasets import Dataset

    enc = tokenizer(texts, return_special_tokens_mask=True)
    concatenated = {k: [t for seq in enc[k] for t in seq] for k in enc}
    total = len(concatenated["input_ids"]) // block * block  # run_mlm drops the remainder
    return Dataset.from_dict({k: [v[i : i + block] for i in range(0, total, block)] for k, v in concatenated.items()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=sorted(SETTINGS))
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="minilm", help="model directory or built-in name (a tiny one for smoke runs)")
    p.add_argument("--max-length", type=int, default=None, help="block / truncation length (default: the config's)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        DataCollatorForLanguageModeling,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from bertlab.core.models import load_tokenizer, resolve_model_dir
    from datamodules.sources import fine_food

    s = SETTINGS[args.task] | ({"max_length": args.max_length} if args.max_length else {})
    set_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    train = fine_food()["train"]
    if args.task == "mlm":
        dataset = mlm_dataset(tokenizer, train["text"].tolist(), s["max_length"])
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
        model = AutoModelForMaskedLM.from_pretrained(resolve_model_dir(args.model))
    else:
        from datasets import Dataset

        labels = sorted(train["label"].unique())
        enc = tokenizer(train["text"].tolist(), truncation=True, max_length=s["max_length"])
        dataset = Dataset.from_dict({**enc, "labels": [labels.index(v) for v in train["label"]]})
        collator = DataCollatorWithPadding(tokenizer)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_dir(args.model), num_labels=len(labels)
        )
    batches: list[dict] = []

    def collate(features):
        batch = collator(features)
        batches.append({"tokens": int(batch["attention_mask"].sum()), "rows": len(features)})
        batches[-1]["width"] = int(batch["attention_mask"].shape[1])
        if args.task == "mlm":
            batches[-1]["predicted"] = int((batch["labels"] != -100).sum())
            batches[-1]["head_rows"] = batches[-1]["rows"] * batches[-1]["width"]  # full logits: every position
        return batch

    steps: list[dict] = []

    class Timer(TrainerCallback):
        def on_train_begin(self, targs, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            now = time.perf_counter()
            steps.append({"seconds": now - self.last, **batches[len(steps)]})
            self.last = now

    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            max_steps=args.warmup + args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=s["lr"],
            weight_decay=s["weight_decay"],
            warmup_steps=s["warmup_ratio"],  # v5: a float below 1 is a ratio of the steps
            bf16=args.precision == "bf16",
            seed=args.seed,
            use_cpu=not torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if args.task == "classify" else "random",
            dataloader_num_workers=0,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collate, callbacks=[Timer()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    out = summarise_steps(steps, args.warmup, model.config) | {"optim": str(targs.optim)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
