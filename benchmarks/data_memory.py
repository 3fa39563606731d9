"""Peak memory of the MLM data path on a large corpus: tokenisation into the on-disk cache, then training.

Writes a text file of ``--lines`` documents (fine-food review sentences, recombined at random so that
they do not deduplicate away), then runs, as separate processes, what a user runs:

1. ``tokenise``: ``MLMDataModule(corpus=[FILE])``, ``prepare_data()`` — reading, deduplication, the
   validation cut and tokenisation into the cache, which streams token chunks to disk;
2. ``train``: ``bertlab fit --config configs/mlm/fine_food_tapt.yaml`` on the same file (the cache is
   reused), ``--steps`` steps with ``StepTimer``;
3. ``train_glibc``: the same on glibc's malloc (``BERTLAB_ALLOCATOR=system``; ``train`` runs on tcmalloc
   where it is installed, as ``bertlab`` does by default);
4. ``train_baseline``: the same as ``train`` on a ``--baseline-lines`` file (10,000). ``train_data_path_mb`` is what
   the large corpus keeps resident into training (RSS at the first step, minus the baseline's); the
   peaks differ by more, as the two corpora give batches of other widths (activations, allocator).

Each reports its own peak RSS (``ru_maxrss``). Target (issue 10): below 2 GB for 1,000,000 lines.

    python benchmarks/data_memory.py --lines 1000000 --out runs/bench/data_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bertlab.allocator import preload_environment  # noqa: E402

TARGET_MB = 2048


def write_corpus(path: str, lines: int, seed: int = 0) -> None:
    from datamodules.sources import fine_food

    sentences = [s.strip() for t in fine_food()["train"]["text"] for s in re.split(r"(?<=[.!?])\s+", t) if s.strip()]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choice(sentences) for _ in range(rng.randint(2, 5))) + "\n")


TOKENISE = """
import json, sys
sys.path.insert(0, {root!r})
from callbacks.step_timer import peak_rss_mb
from datamodules.mlm import MLMDataModule
dm = MLMDataModule(tokenizer={model!r}, corpus=[{corpus!r}], cache_dir={cache!r}, max_length={max_length})
dm.prepare_data()
dm.setup("fit")  # the cache keys are kept: this opens the cached tokens without reading the corpus again
print(json.dumps({{"documents": sum(map(len, dm.datasets.values())), "peak_rss_mb": peak_rss_mb()}}))
"""


def train(corpus: str, cache: str, args, tmp: str, env: dict) -> dict:
    """``bertlab fit`` of the TAPT config on ``corpus`` for ``steps`` steps: its peak RSS and speed."""
    steps_json = os.path.join(tmp, "steps.json")
    cmd = [
        sys.executable, "-m", "bertlab.cli", "fit", "--config", "configs/mlm/fine_food_tapt.yaml",
        "--data.init_args.task", "null", "--data.init_args.corpus", json.dumps([corpus]),
        "--data.init_args.cache_dir", cache, "--trainer.max_steps", str(args.steps),
        "--model.init_args.model_name_or_path", args.model, "--data.init_args.max_length", str(args.max_length),
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", os.path.join(tmp, "run"),
        "--trainer.callbacks+=callbacks.step_timer.StepTimer", "--trainer.callbacks.output_path", steps_json,
        "--trainer.callbacks.warmup", "2",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    timed = json.load(open(steps_json))
    out = {"peak_rss_mb": timed["peak_rss_mb"], "seconds": time.perf_counter() - started}
    # RSS when the first step starts (data set up, model and optimizer built), and the peak up to then
    out |= {"start_rss_mb": timed.get("start_rss_mb"), "start_peak_rss_mb": timed.get("start_peak_rss_mb")}
    return out | {"tokens_per_s": timed.get("tokens_per_s")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--baseline-lines", type=int, default=10_000)
    p.add_argument("--model", default="minilm", help="model directory or built-in name (a tiny one for smoke runs)")
    p.add_argument("--max-length", type=int, default=128, help="sequence length (the config's 128)")
    p.add_argument("--out", default="runs/bench/data_memory.json")
    args = p.parse_args(argv)
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=ROOT)
    out = {"lines": args.lines, "target_mb": TARGET_MB}
    with tempfile.TemporaryDirectory(prefix="bertlab-datamem-") as tmp:
        corpus, cache = os.path.join(tmp, "corpus.txt"), os.path.join(tmp, "cache")
        write_corpus(corpus, args.lines)
        out["corpus_mb"] = os.path.getsize(corpus) / 2**20
        started = time.perf_counter()
        code = TOKENISE.format(root=ROOT, corpus=corpus, cache=cache, model=args.model, max_length=args.max_length)
        # on the allocator `bertlab fit` would tokenise with (tcmalloc where installed: bertlab.allocator)
        tok_env = preload_environment(env)
        proc = subprocess.run(
            [sys.executable, "-c", code], env=tok_env or env, capture_output=True, text=True, cwd=ROOT
        )
        out["tokenise_allocator"] = "tcmalloc" if tok_env else "glibc"
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        out["tokenise"] = json.loads(proc.stdout.strip().splitlines()[-1]) | {"seconds": time.perf_counter() - started}
        out["train"] = train(corpus, cache, args, tmp, env)
        out["train_glibc"] = train(corpus, cache, args, tmp, env | {"BERTLAB_ALLOCATOR": "system"})
        small = os.path.join(tmp, "small.txt")
        write_corpus(small, args.baseline_lines)
        out["train_baseline"] = {"lines": args.baseline_lines} | train(small, cache, args, tmp, env)
    # what the large corpus keeps resident into training: the batches differ, so the peaks differ by more
    out["train_data_path_mb"] = out["train"]["start_rss_mb"] - out["train_baseline"]["start_rss_mb"]
    out["met"] = max(out["tokenise"]["peak_rss_mb"], out["train"]["peak_rss_mb"]) < TARGET_MB
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
