"""Classification training throughput: bertlab against the HF ``Trainer`` recipes it replaces.

Arms, all on the fine-food train split (the texts and labels ``ClassificationDataModule`` trains
on), with the same model (MiniLM), batch size, max_length, lr, AdamW and number of timed
optimizer steps:

  A   bertlab: ``pl.Trainer`` + ``TextClassifier`` + ``ClassificationDataModule`` (length-grouped
      batches, dynamic padding). The anchor.
  B   HF ``Trainer`` + ``AutoModelForSequenceClassification`` + ``DataCollatorWithPadding``
      (texts truncated to max_length, padded per batch), random order.
  Bg  B with length grouping (v4's ``group_by_length=True``; in v5 ``train_sampling_strategy``).
  C   ``run_glue``'s default: every example padded to max_length, ``default_data_collator``.

A step is timed from the framework's batch-start hook to its batch-end hook (forward, backward,
optimizer step, and the framework's per-step bookkeeping); the first ``--warmup`` steps are not
timed. ``loop`` throughput also counts the time between steps (fetching and collating the next
batch, logging). Ratios are against A measured in the same run, repeat by repeat; with
``--repeats`` the arms are interleaved (the order rotates) and the median is reported.

By default an arm times one epoch's worth of steps: length-grouped samplers put long texts in
some batches and short ones in others (HF's even puts its longest batch first), so a few steps
say little. The table flags an arm whose timed texts are not as long as the split's on average.

    python benchmarks/classify_throughput.py --repeats 3 --out runs/bench/classify.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

ARMS = {
    "A": "bertlab: length-grouped, dynamic padding",
    "B": "HF Trainer: DataCollatorWithPadding, random order",
    "Bg": "HF Trainer: DataCollatorWithPadding, group_by_length",
    "C": "HF Trainer: padding=max_length (run_glue default)",
}
TARGETS = {"B": 1.2, "C": 2.0}  # bertlab's step-throughput speedup wanted over these arms
REPRESENTATIVE_TOLERANCE = 0.10


class StepLog:
    """Step begin/end times and what each step's batch held; the first ``warmup`` steps are dropped."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.begin: list[float] = []
        self.end: list[float] = []
        self.batches: list[tuple[int, int, int]] = []  # (rows, real tokens, padded tokens)
        self.threads: set[int] = set()

    def record_batch(self, batch) -> None:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        self.batches.append((int(ids.shape[0]), int(mask.sum()), int(ids.numel())))

    def start(self) -> None:
        self.threads.add(torch.get_num_threads())
        self.begin.append(time.perf_counter())

    def stop(self) -> None:
        self.end.append(time.perf_counter())

    def summary(self) -> dict:
        w, n = self.warmup, len(self.end)
        if n <= w:
            raise RuntimeError(f"only {n} steps ran; need more than --warmup {w}")
        step_s = sum(e - b for b, e in zip(self.begin[w:n], self.end[w:n]))
        loop_s = self.end[n - 1] - (self.end[w - 1] if w > 0 else self.begin[0])
        rows, real, padded = (sum(col) for col in zip(*self.batches[w:n]))
        return {
            "timed_steps": n - w,
            "samples": rows,
            "step_s": step_s,
            "loop_s": loop_s,
            "samples_per_s": rows / step_s,
            "loop_samples_per_s": rows / loop_s,
            "real_tokens_per_s": real / step_s,
            "mean_real_tokens": real / rows,
            "mean_padded_width": padded / rows,
            "pad_fraction": 1 - real / padded,
            "threads": sorted(self.threads),
        }


# ---------------------------------------------------------------- arm A: bertlab


def train_split(args):
    """bertlab's fine-food data module, set up: the train split every arm trains on."""
    from datamodules.classification import ClassificationDataModule

    dm = ClassificationDataModule(
        tokenizer="minilm",
        source="fine_food",
        max_length=args.max_length,
        batch_size=args.batch_size,
        group_by_length=True,
        split_seed=args.seed,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def run_bertlab(args) -> dict:
    import pytorch_lightning as pl

    from lightning_modules.classifier import TextClassifier

    class Timer(pl.Callback):
        def __init__(self, log: StepLog):
            self.steps = log

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.steps.record_batch(batch)
            self.steps.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps.stop()

    pl.seed_everything(args.seed, verbose=False)
    dm = train_split(args)  # a fresh one per run, so every repeat draws the same batches
    model = TextClassifier(
        "minilm",
        num_labels=dm.num_labels,
        id2label=dm.id2label,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_ratio=0.1,
    )
    log = StepLog(args.warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Timer(log)],
    )
    trainer.fit(model, datamodule=dm)
    out = log.summary()
    out["attn_implementation"] = model.encoder.config._attn_implementation
    return out


# ---------------------------------------------------------------- arms B, Bg, C: HF Trainer


def hf_train_data(args, dm) -> dict:
    """The train split bertlab uses, as texts and label ids, tokenised the HF way for each padding."""
    from datasets import Dataset

    frame = dm.frames["train"]
    texts, labels = frame["text"].tolist(), frame["label"].map(dm.label2id).tolist()
    tok = dm.tokenizer
    dynamic = tok(texts, truncation=True, max_length=args.max_length)
    padded = tok(texts, truncation=True, max_length=args.max_length, padding="max_length")
    ours = dm.datasets["train"]
    same = all(list(ours[i]["input_ids"]) == dynamic["input_ids"][i] for i in range(len(texts)))
    return {
        "tokenizer": tok,
        "num_labels": dm.num_labels,
        "dynamic": Dataset.from_dict({**dynamic, "labels": labels}),
        "max_length": Dataset.from_dict({**padded, "labels": labels}),
        "same_tokens_as_bertlab": same,
    }


def run_hf(args, arm: str, data: dict) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from lightning_modules.hf_loading import from_pretrained

    class Timer(TrainerCallback):
        def __init__(self, log: StepLog):
            self.steps = log

        def on_step_begin(self, targs, state, control, **kwargs):
            self.steps.start()

        def on_step_end(self, targs, state, control, **kwargs):
            self.steps.stop()

    log = StepLog(args.warmup)
    base = default_data_collator if arm == "C" else DataCollatorWithPadding(data["tokenizer"])

    def collate(features):
        # One batch per step (no accumulation, no workers), so the i-th collated batch is step i's.
        batch = base(features)
        log.record_batch(batch)
        return batch

    set_seed(args.seed)
    model, _ = from_pretrained(AutoModelForSequenceClassification, "minilm", num_labels=data["num_labels"])
    model.train()
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            max_steps=args.warmup + args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            weight_decay=args.weight_decay,
            warmup_steps=0.1,
            optim=args.hf_optim,
            seed=args.seed,
            use_cpu=True,
            train_sampling_strategy="group_by_length" if arm == "Bg" else "random",
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=data["max_length" if arm == "C" else "dynamic"],
            data_collator=collate,
            processing_class=data["tokenizer"],
            callbacks=[Timer(log)],
        )
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training summary to stdout
        trainer.train()
    out = log.summary()
    out["attn_implementation"] = model.config._attn_implementation
    return out


# ---------------------------------------------------------------- driver


def summarise(arms: list[str], runs: dict[str, list[dict]], dataset_mean_tokens: float) -> dict:
    anchor = runs.get("A")
    out = {}
    for arm in arms:
        rs = runs[arm]
        mean_real = statistics.median(r["mean_real_tokens"] for r in rs)
        row = {
            "arm": arm,
            "description": ARMS[arm],
            "samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
            "mean_real_tokens": mean_real,
            # The timed batches should hold texts as long as the split's on average; a grouped sampler
            # over a few steps may draw only short (or only long) ones, and then samples/s means little.
            "representative": abs(mean_real / dataset_mean_tokens - 1) <= REPRESENTATIVE_TOLERANCE,
            "loop_samples_per_s": statistics.median(r["loop_samples_per_s"] for r in rs),
            "mean_padded_width": statistics.median(r["mean_padded_width"] for r in rs),
            "pad_fraction": statistics.median(r["pad_fraction"] for r in rs),
            "runs": rs,
        }
        if anchor:
            # repeat by repeat: each ratio compares two arms measured minutes apart, never across the whole run
            row["vs_anchor"] = statistics.median(r["samples_per_s"] / a["samples_per_s"] for r, a in zip(rs, anchor))
            row["bertlab_speedup"] = statistics.median(
                a["samples_per_s"] / r["samples_per_s"] for r, a in zip(rs, anchor)
            )
            row["loop_bertlab_speedup"] = statistics.median(
                a["loop_samples_per_s"] / r["loop_samples_per_s"] for r, a in zip(rs, anchor)
            )
        out[arm] = row
    return out


def print_table(rows: dict, args, dataset_mean_tokens: float) -> None:
    print(
        f"\nclassification training throughput: MiniLM, batch {args.batch_size}, max_length {args.max_length}, {args.steps} timed steps "
        f"(+{args.warmup} warmup), {args.threads} thread(s), median of {args.repeats} repeat(s){'; anchor A' if 'A' in rows else '; no anchor (A not run)'}"
    )
    head = f"{'arm':<4} {'samples/s':>10} {'A ÷ arm':>8} {'loop/s':>8} {'A ÷ arm':>8} {'tokens':>7} {'width':>6} {'pad %':>6}  description"
    print(head)
    print("-" * len(head))
    for r in rows.values():
        sp, lsp = r.get("bertlab_speedup"), r.get("loop_bertlab_speedup")
        flag = " " if r["representative"] else "!"
        print(
            f"{r['arm']:<4} {r['samples_per_s']:>10.2f} {'' if sp is None else f'{sp:.2f}×':>8} {r['loop_samples_per_s']:>8.2f} "
            f"{'' if lsp is None else f'{lsp:.2f}×':>8} {r['mean_real_tokens']:>6.1f}{flag} {r['mean_padded_width']:>6.1f} "
            f"{100 * r['pad_fraction']:>5.1f}%  {r['description']}"
        )
    print(
        "A ÷ arm: bertlab's samples/s over the arm's (steps only, then the whole loop). tokens: mean non-pad tokens per timed example "
        f"(the split's mean is {dataset_mean_tokens:.1f}); width: mean padded length"
    )
    if not all(r["representative"] for r in rows.values()):
        print(
            f"! the timed batches' texts differ in length from the split's mean by more than {REPRESENTATIVE_TOLERANCE:.0%}: "
            "these ratios are not the framework's; time about one epoch (the default --steps)"
        )
    for arm, want in TARGETS.items():
        if arm in rows and "bertlab_speedup" in rows[arm]:
            got = rows[arm]["bertlab_speedup"]
            caveat = "" if rows["A"]["representative"] and rows[arm]["representative"] else ", but see !"
            print(f"target A ÷ {arm} ≥ {want}: {got:.2f} ({'met' if got >= want else 'NOT met'}{caveat})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed optimizer steps per arm (default: one epoch of the train split)"
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--repeats", type=int, default=1, help="run every arm this many times, interleaved; report medians")
    p.add_argument(
        "--hf-optim",
        default="adamw_torch",
        help="HF Trainer optim; adamw_torch is the same torch.optim.AdamW bertlab uses (v5's default is adamw_torch_fused)",
    )
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import pytorch_lightning as pl  # imported before quietening: importing it sets its logger's level
    import transformers

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    arms = list(dict.fromkeys(args.arms))
    dm = train_split(args)
    n_train, dataset_mean_tokens = len(dm.datasets["train"]), float(dm.datasets["train"].lengths().mean())
    if args.steps is None:
        args.steps = math.ceil(n_train / args.batch_size)
    data = hf_train_data(args, dm) if any(a != "A" for a in arms) else None
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for rep in range(args.repeats):
        order = arms[rep % len(arms) :] + arms[: rep % len(arms)]
        for arm in order:
            t0 = time.perf_counter()
            result = run_bertlab(args) if arm == "A" else run_hf(args, arm, data)
            result["repeat"] = rep
            runs[arm].append(result)
            print(
                f"[repeat {rep + 1}/{args.repeats}] {arm}: {result['samples_per_s']:.2f} samples/s ({time.perf_counter() - t0:.0f} s with setup)",
                file=sys.stderr,
                flush=True,
            )
            gc.collect()
    rows = summarise(arms, runs, dataset_mean_tokens)
    payload = {
        "benchmark": "classify_throughput",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "config": vars(args),
        "anchor": "A" if "A" in arms else None,
        "targets": {
            f"A/{k}": {"want": v, "got": rows[k].get("bertlab_speedup")} for k, v in TARGETS.items() if k in rows
        },
        "same_tokens_as_bertlab": None if data is None else data["same_tokens_as_bertlab"],
        "train_examples": n_train,
        "dataset_mean_tokens": dataset_mean_tokens,
        "arms": rows,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "pytorch_lightning": pl.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print_table(rows, args, dataset_mean_tokens)
    line = json.dumps(payload, default=str)
    print(line)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
