"""Buffer-rule labelling (Gu et al. 2020, selective masking): bertlab's scorer against the authors' loop.

Both label the same sentences of the same fine-food *validation* reviews (bertlab's val split of the
train file, never the test split) with the same Model_0 and δ (``datamodules.buffer_rule``):

  anchor   the authors' loop as one prefix per forward (``naive_buffer_rule_labels``), fp32, one sentence
           at a time, on the sentences the review splitter makes (thunlp/SelectiveMasking labels sentences)
  scorer   bertlab's: a pool of sentences steps together, each step's candidates sorted by length into
           forwards of ``--batch-size`` rows, bf16 where the hardware has it (``precision`` auto), the
           same threads; timed per ``--group`` sentences

Both use the threads ``datamodules.scoring_run.scoring_threads`` gives (all cores, or OMP_NUM_THREADS).
The reviews' sentences are put in a seeded random order. The anchor labels them from the start for
``--anchor-seconds``; the scorer labels full batches of them from the start (so its first batch holds the
anchor's sentences) until ``--scorer-seconds`` are up. Each rate is an estimate over a random sample of the
same sentences. ``speedup`` is the ratio of content tokens labelled per second, scorer over anchor (target
>= 10); its noise: the anchor's two halves and the scorer's batches give ``speedup_range``. The JSON also
says how far the scorer's (bf16) labels agree with the fp32 anchor's, and checks that fp32 batching gives
the anchor's labels exactly. Model_0 is ``--model0 DIR`` (a fine-tuned sequence-classifier export, e.g. a
``fine_food_selective`` pipeline's ``model0/export``); without it, MiniLM gets a logistic-regression head
fitted on the pooled outputs of ``--fit-reviews`` train reviews (never the validation ones), which costs
seconds where fine-tuning costs minutes. Rates are tokens per wall-clock second and, beside them, per CPU
second of this process (``*_cpu``), which a machine shared with other jobs distorts less.

    python benchmarks/selective_scoring.py --out runs/bench/selective_scoring.json [--model0 DIR]

Prints progress to stderr and the result as one JSON object on the last line (also to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bertlab.core.hardware import cpu_has_bf16, inference_dtype  # noqa: E402
from datamodules import sources  # noqa: E402
from datamodules.buffer_rule import (  # noqa: E402
    buffer_rule_labels,
    continuation_table,
    continuation_word_ids,
    naive_buffer_rule_labels,
)
from datamodules.scoring_run import scoring_threads  # noqa: E402
from datamodules.sentences import split_documents  # noqa: E402
from datamodules.splits import Splits  # noqa: E402
from datamodules.task_scorer import classifier_probs, load_sequence_classifier  # noqa: E402
from datamodules.token_cache import SpecialTemplate  # noqa: E402

TARGET = 10.0


def log(msg: str) -> None:
    print(f"[selective_scoring] {msg}", file=sys.stderr, flush=True)


def quick_model0(out_dir: str, base: str, train, labels, n: int, max_length: int, seed: int) -> str:
    """A cheap Model_0: ``base`` (MiniLM) with its classifier fitted by logistic regression on the pooled outputs
    of ``n`` train reviews (a few seconds of CPU; only so that labels exist, as Model_0 must be right on a
    sentence)."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification

    from bertlab.core.models import load_tokenizer, resolve_model_dir

    tok = load_tokenizer(base)
    id2label = dict(enumerate(labels))
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_dir(base), num_labels=2, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    ).eval()
    rows = train.sample(n=min(n, len(train)), random_state=seed)
    feats = []
    with torch.inference_mode():
        for lo in range(0, len(rows), 64):
            enc = tok(
                rows["text"].iloc[lo : lo + 64].tolist(),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            feats.append(model.base_model(**enc).pooler_output)
    x, y = torch.cat(feats).numpy(), np.array([labels.index(v) for v in rows["label"]])
    fit = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    log(f"Model_0: {base} + a logistic head on {len(rows)} train reviews (train accuracy {fit.score(x, y):.2f})")
    w, b = torch.tensor(fit.coef_[0], dtype=torch.float32), float(fit.intercept_[0])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


class Counting:
    """Wraps ``prob_fn``: forward calls, rows scored, and token slots (padding included) against real tokens."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows, self.slots, self.tokens = fn, 0, 0, 0, 0

    def __call__(self, ids, mask):
        self.calls += 1
        self.rows += ids.shape[0]
        self.slots += ids.numel()
        self.tokens += int(mask.sum())
        return self.fn(ids, mask)


def timed(fn, *args, **kwargs):
    """(result, wall-clock seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def same(a, b) -> bool:
    return (a is None) == (b is None) and (a is None or np.array_equal(a, b))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model0", help="Model_0: a fine-tuned sequence-classifier directory (default: fine-tune MiniLM here)"
    )
    p.add_argument("--n", type=int, default=200, help="validation reviews whose sentences are labelled")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--delta", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward in bertlab's scorer")
    p.add_argument("--group", type=int, default=256, help="sentences per timed call of bertlab's scorer")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="bertlab's scorer's dtype")
    p.add_argument("--anchor-seconds", type=float, default=40.0, help="time the anchor may run")
    p.add_argument("--scorer-seconds", type=float, default=30.0, help="time bertlab's scorer may start batches in")
    p.add_argument("--fit-reviews", type=int, default=256, help="train reviews the quick Model_0's head is fitted on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default="minilm", help="the quick Model_0's encoder (a tiny one for smoke runs)")
    p.add_argument("--out", default="runs/bench/selective_scoring.json")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    frames = Splits(source="fine_food", val_fraction=0.1).read()
    labels = sources.sort_labels(frames["train"]["label"])
    val = frames["val"].iloc[: args.n]
    model0_dir = args.model0 or quick_model0(
        tempfile.mkdtemp(prefix="model0-"), args.base, frames["train"], labels, args.fit_reviews, 64, args.seed
    )
    from bertlab.core.models import load_tokenizer

    tok = load_tokenizer(model0_dir)
    model = load_sequence_classifier(model0_dir, labels, role="Model_0")
    template = SpecialTemplate.from_tokenizer(tok)
    texts, doc = split_documents(val["text"].tolist(), "english")
    budget = args.max_length - template.n_special(False)
    encoded = [ids[:budget] for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    order = [i for i in np.random.default_rng(args.seed).permutation(len(texts)) if encoded[i]]
    content = [encoded[i] for i in order]
    gold = [labels.index(val["label"].iloc[doc[i]]) for i in order]
    continuation = continuation_table(tok)
    words = [continuation_word_ids(c, continuation) for c in content]
    log(f"{len(val)} validation reviews, {len(content)} sentences, {sum(map(len, content))} tokens")

    common = (template.prefix, template.suffix, tok.pad_token_id)
    fp32 = classifier_probs(model)
    anchor, seconds, cpu = [], [], []
    with scoring_threads() as threads:
        t0 = time.perf_counter()
        while len(anchor) < len(content) and time.perf_counter() - t0 < args.anchor_seconds:
            i = len(anchor)
            (lab,), s, c = timed(
                naive_buffer_rule_labels, fp32, [content[i]], [words[i]], [gold[i]], *common, args.delta
            )
            anchor.append(lab)
            seconds.append(s)
            cpu.append(c)
        n_timed = len(anchor)
        sub = (content[:n_timed], words[:n_timed], gold[:n_timed])
        lengths = np.array([len(c) for c in sub[0]])
        tokens, half = int(lengths.sum()), n_timed // 2
        halves = [lengths[a:b].sum() / sum(seconds[a:b]) for a, b in ((0, half), (half, n_timed))]
        anchor_rate, anchor_cpu = tokens / sum(seconds), tokens / sum(cpu)
        log(
            f"anchor: {n_timed} sentences, {tokens} tokens, {anchor_rate:.0f} tok/s "
            f"(halves {halves[0]:.0f}, {halves[1]:.0f})"
        )

        # bertlab's scorer: full batches of the same shuffled sentences, until its time is up (at least one)
        dtype = inference_dtype(args.precision)
        fast = Counting(classifier_probs(model, dtype))
        runs, runs_cpu, out, t0 = [], [], [], time.perf_counter()
        for lo in range(0, len(content), args.group):
            if runs and time.perf_counter() - t0 > args.scorer_seconds:
                break
            hi = min(lo + args.group, len(content))
            got, s, c = timed(
                buffer_rule_labels,
                fast,
                content[lo:hi],
                words[lo:hi],
                gold[lo:hi],
                *common,
                args.delta,
                args.batch_size,
            )
            n = sum(map(len, content[lo:hi]))
            runs.append(n / s)
            runs_cpu.append(n / c)
            out.extend(got)
            log(f"scorer ({str(dtype).removeprefix('torch.')}): sentences {lo}-{hi}, {n / s:.0f} tok/s")
        scored_sentences = len(out)
        out = out[:n_timed]
        exact, _, _ = timed(buffer_rule_labels, classifier_probs(model), *sub, *common, delta=args.delta)

    speedup = float(np.median(runs)) / anchor_rate
    known = [(a, b) for a, b in zip(anchor, out) if a is not None and b is not None]
    flat_a = np.concatenate([a for a, _ in known]) if known else np.zeros(0)
    flat_b = np.concatenate([b for _, b in known]) if known else np.zeros(0)
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "speedup": round(speedup, 2),
        "speedup_range": [round(min(runs) / max(halves), 2), round(max(runs) / min(halves), 2)],
        "target": TARGET,
        "target_met": speedup >= TARGET,
        "speedup_cpu": round(float(np.median(runs_cpu)) / anchor_cpu, 2),
        "anchor_tokens_per_s": round(anchor_rate, 1),
        "anchor_tokens_per_cpu_s": round(anchor_cpu, 1),
        "anchor_halves_tokens_per_s": [round(h, 1) for h in halves],
        "scorer_tokens_per_s": [round(r, 1) for r in runs],
        "scorer_tokens_per_cpu_s": [round(r, 1) for r in runs_cpu],
        "scorer_sentences": scored_sentences,
        "fp32_batched_identical_to_anchor": all(same(a, b) for a, b in zip(anchor, exact)),
        "scorer_dtype": str(dtype).removeprefix("torch."),
        "scorer_vs_anchor": {
            "same_correctness": float(np.mean([(a is None) == (b is None) for a, b in zip(anchor, out)])),
            "identical_sentences": float(np.mean([same(a, b) for a, b in zip(anchor, out)])),
            "token_agreement": float((flat_a == flat_b).mean()) if flat_a.size else None,
        },
        "forward_calls": fast.calls,
        "rows": fast.rows,
        "padding_share": round(1 - fast.tokens / fast.slots, 4),
        "reviews": len(val),
        "sentences": len(content),
        "sentences_timed": n_timed,
        "tokens_timed": tokens,
        "important_share": round(float(flat_a.mean()), 4) if flat_a.size else None,
        "threads": threads,
        "seconds_total": round(time.perf_counter() - started, 1),
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"model0": model0_dir},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "bf16": cpu_has_bf16()[1] or "none"},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"scorer {np.median(runs):.0f} vs anchor {anchor_rate:.0f} tokens/s: speedup {speedup:.1f}x "
        f"(per CPU second {result['speedup_cpu']:.1f}x) "
        f"(range {result['speedup_range']}; target >= {TARGET:.0f}x: {'met' if speedup >= TARGET else 'NOT met'})"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
