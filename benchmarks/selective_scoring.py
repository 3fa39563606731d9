"""Buffer-rule labelling (Gu et al. 2020, selective masking): batched against the naive loop.

Both label the same fine-food reviews with the same Model_0 and δ (``datamodules.buffer_rule``):

  naive    one forward of Model_0 per sentence and per candidate prefix s′ w_i (the anchor)
  batched  each step scores the current candidate of every active sentence of a batch in one forward

The script checks that both give identical labels (every sentence, every token), then reports the
time of each, the ratio naive ÷ batched as ``speedup`` (target ≥ 10×), and how many forward calls and
rows each made. Model_0 is ``--model0 DIR`` (a fine-tuned sequence-classifier export, e.g. a
``fine_food_selective`` pipeline's ``model0/export``); without it MiniLM is fine-tuned here for
``--finetune-steps`` steps on the train split (the reviews labelled are from the test split).

    python benchmarks/selective_scoring.py --out runs/bench/selective_scoring.json [--model0 DIR]

Prints progress to stderr and the result as one JSON object on the last line (also to ``--out``).

Both make the same number of rows (candidates); batching cuts the number of forward calls ~30×
(``forward_call_ratio``). On a CPU the forward is compute-bound, so that buys little: measured here
(2 shared cores, 1 thread) 1.3×, with 11 % padding. The ≥ 10× target needs hardware on which a
one-row forward costs about as much as a batched one (a GPU); it was not measured on one.
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

from datamodules import sources  # noqa: E402
from datamodules.buffer_rule import buffer_rule_labels, continuation_word_ids, naive_buffer_rule_labels  # noqa: E402
from datamodules.task_scorer import classifier_probs, load_sequence_classifier  # noqa: E402
from datamodules.token_cache import SpecialTemplate  # noqa: E402

TARGET = 10.0


def log(msg: str) -> None:
    print(f"[selective_scoring] {msg}", file=sys.stderr, flush=True)


def finetune_model0(out_dir: str, steps: int, max_length: int, seed: int) -> str:
    """A quick MiniLM classifier on fine-food's train split (only so that labels exist: Model_0 must be right)."""
    from transformers import AutoModelForSequenceClassification

    from bertlab.core.models import load_tokenizer, resolve_model_dir

    tok = load_tokenizer("minilm")
    train = sources.fine_food()["train"]
    labels = sources.sort_labels(train["label"])
    id2label = dict(enumerate(labels))
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_dir("minilm"),
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    y = torch.tensor([labels.index(v) for v in train["label"]])
    enc = tok(train["text"].tolist(), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        b = torch.randint(0, len(y), (16,), generator=g)
        width = int(enc["attention_mask"][b].sum(1).max())
        loss = model(
            input_ids=enc["input_ids"][b, :width], attention_mask=enc["attention_mask"][b, :width], labels=y[b]
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            log(f"fine-tune Model_0: step {step}/{steps}, loss {loss.item():.3f}")
    model.eval().save_pretrained(out_dir)
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model0", help="Model_0: a fine-tuned sequence-classifier directory (default: fine-tune MiniLM here)"
    )
    p.add_argument("--n", type=int, default=200, help="reviews to label (the first N of the test split)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--delta", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch in the batched labeller")
    p.add_argument("--finetune-steps", type=int, default=120)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench/selective_scoring.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    test = sources.fine_food()["test"].iloc[: args.n]
    model0_dir = args.model0
    if model0_dir is None:
        model0_dir = finetune_model0(tempfile.mkdtemp(prefix="model0-"), args.finetune_steps, 64, args.seed)
    from bertlab.core.models import load_tokenizer

    tok = load_tokenizer(model0_dir)
    labels = sources.sort_labels(sources.fine_food()["train"]["label"])
    model = load_sequence_classifier(model0_dir, labels, role="Model_0")
    template = SpecialTemplate.from_tokenizer(tok)
    budget = args.max_length - template.n_special(False)
    content = [ids[:budget] for ids in tok(test["text"].tolist(), add_special_tokens=False)["input_ids"]]
    continuation = np.array([t.startswith("##") for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    words = [continuation_word_ids(c, continuation) for c in content]
    gold = [labels.index(v) for v in test["label"]]
    common = (words, gold, template.prefix, template.suffix, tok.pad_token_id)
    n_words = [len(set(w)) for w in words]
    log(f"{len(content)} reviews, {sum(map(len, content))} tokens, {sum(n_words)} words; Model_0 = {model0_dir}")

    runs = {}
    for name in ("batched", "naive"):
        fn = Counting(classifier_probs(model))
        t0 = time.perf_counter()
        if name == "batched":
            out = buffer_rule_labels(fn, content, *common, delta=args.delta, batch_size=args.batch_size)
        else:
            out = naive_buffer_rule_labels(fn, content, *common, delta=args.delta)
        seconds = time.perf_counter() - t0
        padding = 1 - fn.tokens / fn.slots
        runs[name] = {
            "seconds": round(seconds, 3),
            "forward_calls": fn.calls,
            "rows": fn.rows,
            "padding_share": round(padding, 4),
            "labels": out,
        }
        log(f"{name}: {seconds:.1f} s, {fn.calls} forward calls, {fn.rows} rows, {padding:.1%} padding")

    a, b = runs["batched"].pop("labels"), runs["naive"].pop("labels")
    mismatched = [
        i
        for i, (x, y) in enumerate(zip(a, b))
        if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y))
    ]
    labelled = [x for x in a if x is not None]
    flat = np.concatenate(labelled) if labelled else np.zeros(0)
    speedup = runs["naive"]["seconds"] / runs["batched"]["seconds"]
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "speedup": round(speedup, 2),
        # the speedup's ceiling where a forward costs the same for 1 row as for a batch (an accelerator,
        # launch-bound); on CPU a forward is compute-bound and batching saves only per-call overhead
        "forward_call_ratio": round(runs["naive"]["forward_calls"] / runs["batched"]["forward_calls"], 1),
        "target": TARGET,
        "target_met": speedup >= TARGET,
        "identical_labels": not mismatched,
        "mismatched_sentences": mismatched,
        "batched": runs["batched"],
        "naive": runs["naive"],
        "reviews": len(content),
        "correctly_classified": len(labelled),
        "important_share": round(float(flat.mean()), 4) if flat.size else None,
        "tokens": int(sum(map(len, content))),
        "words": int(sum(n_words)),
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"model0": model0_dir},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"batched {runs['batched']['seconds']:.1f} s vs naive {runs['naive']['seconds']:.1f} s: speedup {speedup:.1f}x "
        f"(target >= {TARGET:.0f}x: {'met' if speedup >= TARGET else 'NOT met'}); identical labels: {not mismatched}"
    )
    print(json.dumps({k: v for k, v in result.items() if k != "mismatched_sentences"}))
    return result


if __name__ == "__main__":
    main()
