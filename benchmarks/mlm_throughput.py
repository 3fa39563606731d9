"""Masked-LM training throughput: bertlab's sparse MLM head and maskers against HF's full-vocabulary loop.

Every row trains MiniLM (the same weights and fresh MLM head, seeded) on the same batches: the
same fine-food train documents (``MLMDataModule(task={"source": "fine_food"})``, line by line,
cut to max_length) in the same random order and batch composition, with the same AdamW and
linear schedule. Rows:

  A           bertlab: ``MaskedLM``'s sparse path (vocabulary logits only at masked positions) fed
              by the ``dynamic`` masker. The anchor.
  A:<scheme>  A with another masker: ``static``, ``whole_word``, ``span``, and ``selective`` /
              ``entropy`` on random per-token scores (no scoring model is run).
  B           a plain loop over HF ``BertForMaskedLM`` (``model(**batch).loss``: logits over the whole
              vocabulary at every position) fed by ``DataCollatorForLanguageModeling(mlm_probability=0.15)``
              on ``run_mlm``-style features (``return_special_tokens_mask=True``).
  Bwwm        B with ``whole_word_mask=True``. In transformers 5 it needs ``offset_mapping`` and
              ``tokenizer.pad`` cannot pad that, so these features are pre-padded to max_length.

Each iteration is timed in two parts: the collate call (masking included) and the training step
(forward, loss, backward, optimizer and schedule step). Throughput counts non-pad tokens. The first
``--warmup`` iterations are not timed. Ratios are against A measured in the same run, repeat by
repeat; with ``--repeats`` the rows are interleaved (the order rotates) and medians are reported.

    python benchmarks/mlm_throughput.py --repeats 3 --out runs/bench/mlm.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCHEMES = ("dynamic", "static", "whole_word", "span", "selective", "entropy")
SCORED = ("selective", "entropy")
HF_ARMS = {
    "B": "HF BertForMaskedLM + DataCollatorForLanguageModeling",
    "Bwwm": "B with whole_word_mask=True (padded to max_length)",
}
TARGET_SPEEDUP = 2.5  # bertlab's tokens/s over B
TARGET_COLLATE_SHARE = 0.03  # of an iteration (collate + training step), for every bertlab masker


def describe(row: str) -> str:
    if row in HF_ARMS:
        return HF_ARMS[row]
    scheme = row.split(":", 1)[1] if ":" in row else "dynamic"
    return f"bertlab MaskedLM (sparse head) + {scheme} masker" + (" (random scores)" if scheme in SCORED else "")


# ---------------------------------------------------------------- data: the same batches for every row


def prepare_data(args, rows: list[str]) -> dict:
    """Per batch: bertlab's features (with and without scores) and HF's features for the same documents."""
    from datamodules.mlm import MLMDataModule

    dm = MLMDataModule(
        tokenizer="minilm",
        task={"source": "fine_food"},
        max_length=args.max_length,
        masker="dynamic",
        batch_size=args.batch_size,
        seed=args.seed,
    )
    dm.prepare_data()
    dm.setup("fit")
    ds, docs, tok = dm.datasets["train"], dm.documents["train"], dm.tokenizer
    n_batches = args.warmup + args.steps
    g = torch.Generator().manual_seed(args.seed)
    order = torch.cat(
        [torch.randperm(len(ds), generator=g) for _ in range(-(-n_batches * args.batch_size // len(ds)))]
    ).tolist()
    batches = [order[k * args.batch_size : (k + 1) * args.batch_size] for k in range(n_batches)]
    used = sorted({i for b in batches for i in b})
    rng = np.random.default_rng(args.seed)
    plain = {i: ds[i] for i in used}
    scored = {i: {**plain[i], "scores": rng.random(len(plain[i]["input_ids"]), dtype=np.float32)} for i in used}
    data = {
        "tokenizer": tok,
        "train_documents": len(ds),
        "plain": [[plain[i] for i in b] for b in batches],
        "scored": [[scored[i] for i in b] for b in batches],
    }
    texts = [docs[i] for i in used]
    if "B" in rows:
        enc = tok(texts, truncation=True, max_length=args.max_length, return_special_tokens_mask=True)
        feats = {i: {k: enc[k][n] for k in enc} for n, i in enumerate(used)}
        data["same_tokens_as_bertlab"] = all(feats[i]["input_ids"] == plain[i]["input_ids"].tolist() for i in used)
        data["hf"] = [[feats[i] for i in b] for b in batches]
    if "Bwwm" in rows:
        enc = tok(
            texts,
            truncation=True,
            max_length=args.max_length,
            padding="max_length",
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        feats = {i: {k: enc[k][n] for k in enc} for n, i in enumerate(used)}
        data["hf_wwm"] = [[feats[i] for i in b] for b in batches]
    return data


# ---------------------------------------------------------------- the timed loop


def adamw(holder, args, total_steps: int):
    """The optimiser every bertlab module builds (no decay on bias/LayerNorm) and its linear schedule."""
    from lightning_modules.param_groups import build_param_groups, linear_warmup_decay

    opt = torch.optim.AdamW(build_param_groups(holder, args.lr, args.weight_decay, encoder_attr="model"), lr=args.lr)
    return opt, linear_warmup_decay(opt, total_steps, warmup_ratio=0.06)


def timed_loop(collate, loss_fn, params_holder, feature_batches: list[list[dict]], args) -> dict:
    opt, sched = adamw(params_holder, args, len(feature_batches))
    collate_s = step_s = 0.0
    tokens = padded = masked = rows = 0
    threads = set()
    for k, features in enumerate(feature_batches):
        t0 = time.perf_counter()
        batch = collate(features)
        t1 = time.perf_counter()
        loss = loss_fn(batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if k >= args.warmup:
            collate_s += t1 - t0
            step_s += t2 - t1
            tokens += int(batch["attention_mask"].sum())
            padded += int(batch["input_ids"].numel())
            masked += int((batch["labels"] != -100).sum())
            rows += int(batch["input_ids"].shape[0])
            threads.add(torch.get_num_threads())
    n = len(feature_batches) - args.warmup
    return {
        "timed_steps": n,
        "tokens": tokens,
        "collate_s": collate_s,
        "step_s": step_s,
        "step_tokens_per_s": tokens / step_s,
        "tokens_per_s": tokens / (collate_s + step_s),
        "collate_ms": 1000 * collate_s / n,
        "step_ms": 1000 * step_s / n,
        "collate_share": collate_s / (collate_s + step_s),
        "masked_per_batch": masked / n,
        "masked_fraction": masked / tokens,
        "tokens_per_example": tokens / rows,
        "mean_padded_width": padded / rows,
        "threads": sorted(threads),
    }


def run_bertlab(args, scheme: str, data: dict) -> dict:
    from datamodules.maskers import build_masker
    from lightning_modules.masked_lm import MaskedLM, masked_lm_loss

    torch.manual_seed(args.seed)
    module = MaskedLM("minilm", lr=args.lr, weight_decay=args.weight_decay).train()
    masker = build_masker(scheme, data["tokenizer"], seed=args.seed)

    def loss_fn(batch):
        logits, targets = module(batch)  # the sparse path: the encoder on the batch, the head on masked rows only
        return masked_lm_loss(logits, targets)

    batches = data["scored" if scheme in SCORED else "plain"]
    out = timed_loop(masker, loss_fn, module, batches, args)
    out["attn_implementation"] = module.model.config._attn_implementation
    return out


def run_hf(args, arm: str, data: dict) -> dict:
    from torch import nn
    from transformers import DataCollatorForLanguageModeling

    from lightning_modules.masked_lm import load_mlm_model

    torch.manual_seed(args.seed)
    model, _ = load_mlm_model("minilm")
    holder = nn.Module()
    holder.model = model
    collator = DataCollatorForLanguageModeling(
        data["tokenizer"], mlm_probability=0.15, whole_word_mask=arm == "Bwwm", seed=args.seed
    )
    out = timed_loop(
        collator, lambda batch: model(**batch).loss, holder, data["hf_wwm" if arm == "Bwwm" else "hf"], args
    )
    out["attn_implementation"] = model.config._attn_implementation
    return out


def run_row(args, row: str, data: dict) -> dict:
    if row in HF_ARMS:
        return run_hf(args, row, data)
    return run_bertlab(args, row.split(":", 1)[1] if ":" in row else "dynamic", data)


# ---------------------------------------------------------------- driver


def summarise(rows: list[str], runs: dict[str, list[dict]]) -> dict:
    anchor = runs.get("A")
    out = {}
    for row in rows:
        rs = runs[row]
        med = {
            k: statistics.median(r[k] for r in rs)
            for k in (
                "step_tokens_per_s",
                "tokens_per_s",
                "collate_ms",
                "step_ms",
                "collate_share",
                "masked_per_batch",
                "masked_fraction",
                "mean_padded_width",
            )
        }
        entry = {"row": row, "description": describe(row), **med, "runs": rs}
        if anchor:
            # repeat by repeat: each ratio compares two rows measured minutes apart, never across the whole run
            entry["step_bertlab_speedup"] = statistics.median(
                a["step_tokens_per_s"] / r["step_tokens_per_s"] for r, a in zip(rs, anchor)
            )
            entry["bertlab_speedup"] = statistics.median(
                a["tokens_per_s"] / r["tokens_per_s"] for r, a in zip(rs, anchor)
            )
        out[row] = entry
    return out


def print_table(table: dict, args) -> None:
    print(
        f"\nMLM training throughput: MiniLM, batch {args.batch_size}, max_length {args.max_length}, {args.steps} timed steps "
        f"(+{args.warmup} warmup), {args.threads} thread(s), median of {args.repeats} repeat(s){'; anchor A' if 'A' in table else '; no anchor (A not run)'}"
    )
    head = (
        f"{'row':<14} {'tok/s step':>10} {'A ÷ row':>8} {'tok/s iter':>10} {'A ÷ row':>8} {'collate ms':>10} {'step ms':>8} "
        f"{'collate %':>9} {'masked':>7} {'width':>6}  description"
    )
    print(head)
    print("-" * len(head))
    for r in table.values():
        sp, ip = r.get("step_bertlab_speedup"), r.get("bertlab_speedup")
        print(
            f"{r['row']:<14} {r['step_tokens_per_s']:>10.0f} {'' if sp is None else f'{sp:.2f}×':>8} {r['tokens_per_s']:>10.0f} "
            f"{'' if ip is None else f'{ip:.2f}×':>8} {r['collate_ms']:>10.2f} {r['step_ms']:>8.1f} {100 * r['collate_share']:>8.2f}% "
            f"{r['masked_per_batch']:>7.1f} {r['mean_padded_width']:>6.1f}  {r['description']}"
        )
    print(
        "tok/s: non-pad tokens per second of training step alone (step) and of collate + step (iter); A ÷ row: bertlab's over the row's;\n"
        "collate %: collate time / (collate + step); masked: predicted tokens per batch; width: mean padded length"
    )
    for line in target_lines(table):
        print(line)


def target_lines(table: dict) -> list[str]:
    lines = []
    if "B" in table and "bertlab_speedup" in table["B"]:
        s, i = table["B"]["step_bertlab_speedup"], table["B"]["bertlab_speedup"]
        lines.append(
            f"target A ÷ B ≥ {TARGET_SPEEDUP}: {s:.2f} step only ({'met' if s >= TARGET_SPEEDUP else 'NOT met'}), "
            f"{i:.2f} with collation ({'met' if i >= TARGET_SPEEDUP else 'NOT met'})"
        )
    ours = {k: v["collate_share"] for k, v in table.items() if k not in HF_ARMS}
    if ours:
        over = [k for k, v in ours.items() if v > TARGET_COLLATE_SHARE]
        lines.append(
            f"target collate ≤ {TARGET_COLLATE_SHARE:.0%} of an iteration for every bertlab masker: "
            + ("met" if not over else f"NOT met by {', '.join(over)}")
        )
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=50, help="timed optimizer steps per row")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations before them")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--arms", nargs="+", default=["A", "B", "Bwwm"], choices=["A", *HF_ARMS])
    p.add_argument(
        "--schemes",
        nargs="+",
        default=list(SCHEMES),
        choices=SCHEMES,
        help="bertlab maskers to time besides A's dynamic one (pass `--schemes dynamic` for none)",
    )
    p.add_argument("--repeats", type=int, default=1, help="run every row this many times, interleaved; report medians")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import transformers

    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    rows = list(
        dict.fromkeys(
            [
                *(["A"] if "A" in args.arms or "dynamic" in args.schemes else []),
                *(f"A:{s}" for s in args.schemes if s != "dynamic"),
                *(a for a in args.arms if a in HF_ARMS),
            ]
        )
    )
    data = prepare_data(args, rows)
    runs: dict[str, list[dict]] = {r: [] for r in rows}
    for rep in range(args.repeats):
        for row in rows[rep % len(rows) :] + rows[: rep % len(rows)]:
            t0 = time.perf_counter()
            result = run_row(args, row, data)
            result["repeat"] = rep
            runs[row].append(result)
            print(
                f"[repeat {rep + 1}/{args.repeats}] {row}: {result['tokens_per_s']:.0f} tokens/s, collate {100 * result['collate_share']:.2f}% "
                f"({time.perf_counter() - t0:.0f} s with setup)",
                file=sys.stderr,
                flush=True,
            )
            gc.collect()
    table = summarise(rows, runs)
    payload = {
        "benchmark": "mlm_throughput",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "config": vars(args),
        "anchor": "A" if "A" in rows else None,
        "targets": target_lines(table),
        "same_tokens_as_bertlab": data.get("same_tokens_as_bertlab"),
        "train_documents": data["train_documents"],
        "rows": table,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print_table(table, args)
    line = json.dumps(payload, default=str)
    print(line)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
