"""Domain pre-training at corpus scale: ``bertlab fit`` on generated corpora of growing size, against HF ``datasets``.

For each ``--lines`` size, a text file of unique review-like lines (fine-food sentences recombined at random,
a repeat redrawn) and, as separate processes started the way a user starts them:

1. ``cold``: ``bertlab fit --config configs/mlm/fine_food_tapt.yaml`` on the file alone with an empty cache,
   ``--steps`` steps. Peak RSS of the whole process tree (the fit and its tokenizing workers: the sum of their
   proportional resident sizes, Pss, sampled every 0.1 s) and of its largest process, up to the first steps; the
   tokenizing throughput (the cache's tokens over its build time: plan, tokenize, assemble; ``meta.json``); the cache's
   size on disk.
2. ``warm``: the same command again: seconds from its start to the end of its first training step, and its
   peak RSS.
3. ``hf_datasets``: ``load_dataset("text")`` + ``map(tokenizer, batched=True, num_proc=cores)`` with the same
   tokenizer, truncation at 128: its seconds, peak RSS (tree and largest process), cache size. Throughput is
   bertlab's token count (the same lines, the same cut) over its seconds.

``--ddp-lines``: a cold 1-rank and a cold 2-rank (``--trainer.strategy ddp``, gloo) fit on one more corpus:
whether the corpus was tokenized once (the count of tokenizing progress bars in the log) and each rank's own
peak RSS (its tokenizing workers are processes of their own) against the 1-rank run's.

Targets (issue 23): peak RSS at the largest size <= 1.1x that at the smallest and <= 2 GB; tokenizing >= 1.2x
HF ``datasets`` with the same cores; a warm cache to the first step <= 15 s; each DDP rank within 10 % of 1 rank.

    python benchmarks/corpus_scale.py --lines 1000000,3000000 --out results/corpus_scale.json
    python benchmarks/corpus_scale.py --lines 150 --steps 1 --ddp-lines 0 --model DIR --max-length 32  # smoke

``--resume`` keeps the sizes ``--out`` already holds (each records the commit that measured it) and measures the
rest; ``--hf-max-lines N`` runs the HF ``datasets`` comparison only up to N lines (it takes longer than bertlab's
own tokenizing, and the ratio is already known from the smaller sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

import xxhash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TARGETS = {"rss_growth": 1.1, "rss_mb": 2048, "tokenize_vs_hf": 1.2, "warm_first_step_s": 15, "ddp_rank_rss": 1.1}


def write_corpus(path: str, lines: int, seed: int = 0) -> None:
    """``lines`` unique lines of 2-5 fine-food review sentences."""
    from datamodules.sources import fine_food

    sentences = [s.strip() for t in fine_food()["train"]["text"] for s in re.split(r"(?<=[.!?])\s+", t) if s.strip()]
    rng, seen = random.Random(seed), set()
    with open(path, "w", encoding="utf-8") as f:
        while len(seen) < lines:
            line = " ".join(rng.choice(sentences) for _ in range(rng.randint(2, 5)))
            h = xxhash.xxh3_64_intdigest(line.encode())
            if h not in seen:
                seen.add(h)
                f.write(line + "\n")


class TreeMemory(threading.Thread):
    """Samples the resident size of a process and its descendants until ``stop`` is set or ``until`` exists."""

    def __init__(self, pid: int, until: str | None = None):
        super().__init__(daemon=True)
        self.pid, self.until, self.stop = pid, until, threading.Event()
        self.tree_peak_mb, self.process_peak_mb = 0.0, {}  # pid -> (peak MB, LOCAL_RANK or None)

    def run(self) -> None:
        while not self.stop.is_set() and not (self.until and os.path.exists(self.until)):
            total = 0.0
            for pid in _descendants(self.pid):
                status = _status(pid)
                if status is None:
                    continue
                total += status.get("VmRSS", 0) / 1024
                old = self.process_peak_mb.get(pid, (0.0, None))
                self.process_peak_mb[pid] = (max(old[0], status.get("VmHWM", 0) / 1024), old[1] or _rank(pid))
            self.tree_peak_mb = max(self.tree_peak_mb, total)
            time.sleep(0.1)

    def ranks(self) -> dict[str, float]:
        """Peak RSS of each DDP rank's own process: the root is rank 0, a child launched with LOCAL_RANK another."""
        out = {"0": self.process_peak_mb.get(self.pid, (0.0, None))[0]}
        out |= {rank: mb for pid, (mb, rank) in self.process_peak_mb.items() if rank and pid != self.pid}
        return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _status(pid: int) -> dict | None:
    """VmHWM (the process's own peak) and, as VmRSS, its proportional share (Pss): forked tokenizing workers
    share their parent's pages, which plain RSS would count once per process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = [int(line.split()[1]) for line in f if line.startswith("Pss:")]
        return out | ({"VmRSS": pss[0]} if pss else {})
    except (OSError, ValueError):
        return None


def _rank(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
    except OSError:
        return None
    return env.get(b"LOCAL_RANK", b"").decode() or None


def du_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**20


FIRST_STEPS = """
import json, time
import pytorch_lightning as pl

class FirstSteps(pl.Callback):
    '''Writes the wall clock at the end of the first training step (rank 0).'''

    def __init__(self, output_path: str):
        self.output_path = output_path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1 and trainer.is_global_zero:
            with open(self.output_path, "w") as f:
                json.dump({"first_step_at": time.time()}, f)
"""


def fit(corpus: str, cache: str, work: str, args, extra: tuple[str, ...] = ()) -> dict:
    """One ``bertlab fit`` run: its wall time to the first step, its memory up to there, its log."""
    first = os.path.join(work, "first_step.json")
    if os.path.exists(first):
        os.remove(first)
    cmd = [
        sys.executable, "-m", "bertlab.cli", "fit", "--config", os.path.join(ROOT, "configs/mlm/fine_food_tapt.yaml"),
        "--model.init_args.model_name_or_path", args.model, "--data.init_args.task", "null",
        "--data.init_args.corpus", json.dumps([corpus]), "--data.init_args.cache_dir", cache,
        "--data.init_args.max_length", str(args.max_length),
        "--trainer.max_steps", str(args.steps), "--trainer.limit_val_batches", "0",
        "--trainer.default_root_dir", os.path.join(work, "run"),
        "--trainer.callbacks+=corpus_scale_first_step.FirstSteps", "--trainer.callbacks.output_path", first, *extra,
    ]  # fmt: skip
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", PYTHONPATH=f"{ROOT}:{work}")
    started_at, started = time.time(), time.perf_counter()
    log = open(os.path.join(work, "fit.log"), "w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    memory = TreeMemory(proc.pid, until=first)
    memory.start()
    code = proc.wait()
    memory.stop.set()
    memory.join()
    log.close()
    text = open(os.path.join(work, "fit.log"), errors="replace").read()
    if code or not os.path.exists(first):
        raise SystemExit(f"corpus_scale: fit failed (exit {code}):\n{text[-3000:]}")
    with open(first) as f:
        to_first = json.load(f)["first_step_at"] - started_at
    out = {"seconds": time.perf_counter() - started, "to_first_step_s": to_first}
    out |= {"tree_peak_rss_mb": memory.tree_peak_mb, "rank_peak_rss_mb": memory.ranks()}
    out["largest_process_mb"] = max(mb for mb, _ in memory.process_peak_mb.values())
    out["tokenizing_runs"] = len(re.findall(r"tokenizing:\s+0%", text))  # tokenizing progress bars started
    return out


HF_DATASETS = """
import json, sys, time
sys.path.insert(0, {root!r})
from datasets import load_dataset
from bertlab.core.models import load_tokenizer
tok = load_tokenizer({model!r})
started = time.perf_counter()
ds = load_dataset("text", data_files={corpus!r}, cache_dir={cache!r}, split="train")
ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length={max_length}), batched=True, num_proc={cores},
            remove_columns=["text"])
print(json.dumps({{"seconds": time.perf_counter() - started, "rows": len(ds)}}))
"""


def hf_datasets(corpus: str, work: str, args) -> dict:
    cache = os.path.join(work, "hf-cache")
    code = HF_DATASETS.format(
        root=ROOT, model=args.model, corpus=corpus, cache=cache, cores=args.cores, max_length=args.max_length
    )
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    memory.start()
    out_text, _ = proc.communicate()
    memory.stop.set()
    memory.join()
    if proc.returncode:
        raise SystemExit(f"corpus_scale: HF datasets failed (exit {proc.returncode})")
    out = json.loads(out_text.strip().splitlines()[-1])
    out |= {"tree_peak_rss_mb": memory.tree_peak_mb, "cache_mb": du_mb(cache)}
    out["largest_process_mb"] = max(mb for mb, _ in memory.process_peak_mb.values())
    return out


def cache_meta(cache: str) -> dict:
    tokens = os.path.join(cache, "tokens")
    (entry,) = [d for d in os.listdir(tokens) if os.path.isfile(os.path.join(tokens, d, "meta.json"))]
    with open(os.path.join(tokens, entry, "meta.json")) as f:
        return json.load(f)


def one_size(lines: int, tmp: str, args) -> dict:
    work = os.path.join(tmp, f"lines-{lines}")
    os.makedirs(work)
    with open(os.path.join(work, "corpus_scale_first_step.py"), "w") as f:
        f.write(FIRST_STEPS)
    corpus, cache = os.path.join(work, "corpus.txt"), os.path.join(work, "cache")
    write_corpus(corpus, lines)
    out = {"lines": lines, "corpus_mb": os.path.getsize(corpus) / 2**20}
    out["cold"] = fit(corpus, cache, work, args)
    meta = cache_meta(cache)
    tokens = meta["train"]["tokens"] + meta["val"]["tokens"]
    out["tokens"], out["cache_mb"] = tokens, du_mb(os.path.join(cache, "tokens"))
    out["tokenize"] = {"seconds": meta["build"]["seconds"], "workers": meta["build"]["workers"]}
    out["tokenize"]["tokens_per_s"] = tokens / meta["build"]["seconds"]
    out["warm"] = fit(corpus, cache, work, args)
    if args.hf_max_lines and lines > args.hf_max_lines:
        out["hf_datasets"] = f"not run: above --hf-max-lines {args.hf_max_lines}"
    else:
        hf = hf_datasets(corpus, work, args)
        out["hf_datasets"] = hf | {"tokens_per_s": tokens / hf["seconds"], "num_proc": args.cores}
        out["tokenize_vs_hf"] = out["tokenize"]["tokens_per_s"] / out["hf_datasets"]["tokens_per_s"]
    os.remove(corpus)
    return out


def ddp_check(lines: int, tmp: str, args) -> dict:
    work = os.path.join(tmp, f"ddp-{lines}")
    os.makedirs(work)
    with open(os.path.join(work, "corpus_scale_first_step.py"), "w") as f:
        f.write(FIRST_STEPS)
    corpus = os.path.join(work, "corpus.txt")
    write_corpus(corpus, lines, seed=1)
    ddp = ("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")
    one = fit(corpus, os.path.join(work, "cache-1"), work, args)
    two = fit(corpus, os.path.join(work, "cache-2"), work, args, ddp)
    base = one["rank_peak_rss_mb"]["0"]
    ratios = {rank: mb / base for rank, mb in two["rank_peak_rss_mb"].items()}
    met = two["tokenizing_runs"] == 1 and len(ratios) == 2 and max(ratios.values()) <= TARGETS["ddp_rank_rss"]
    return {"lines": lines, "one_rank": one, "two_ranks": two, "rank_rss_vs_one_rank": ratios, "met": met}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", default="1000000,3000000", help="comma-separated corpus sizes, smallest first ('': none)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ddp-lines", type=int, default=300_000, help="corpus size of the DDP check (0: skip)")
    p.add_argument("--model", default="minilm", help="model directory or built-in name (a tiny one for smoke runs)")
    p.add_argument("--max-length", type=int, default=128, help="sequence length of both (the config's 128)")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", default="runs/bench/corpus_scale.json")
    p.add_argument("--hf-max-lines", type=int, default=0, help="run HF datasets only up to this size (0: every size)")
    p.add_argument("--resume", action="store_true", help="keep the sizes --out already holds; measure the others")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.lines.split(",") if n]
    out = {"targets": TARGETS, "cores": args.cores, "model": args.model, "steps": args.steps}
    out["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    out["commit"] = _commit()
    out["machine"]["load_average_at_start"] = os.getloadavg()  # other jobs on the cores skew every timing
    done = _measured(args.out) if args.resume else {}
    with tempfile.TemporaryDirectory(prefix="bertlab-corpus-scale-") as tmp:
        out["sizes"] = []
        for n in sizes:  # written after each part: a long run that is cut short keeps what it measured
            out["sizes"].append(done.get(n) or {**one_size(n, tmp, args), "commit": out["commit"]})
            _write(out, args.out)
        if args.ddp_lines:
            out["ddp"] = ddp_check(args.ddp_lines, tmp, args)
    if sizes:
        small, large = out["sizes"][0], out["sizes"][-1]
        growth = large["cold"]["tree_peak_rss_mb"] / small["cold"]["tree_peak_rss_mb"]
        vs_hf = [s["tokenize_vs_hf"] for s in out["sizes"] if "tokenize_vs_hf" in s]  # none above --hf-max-lines
        out["summary"] = {
            "rss_growth": growth,
            "largest_tree_peak_rss_mb": large["cold"]["tree_peak_rss_mb"],
            "tokenize_vs_hf": min(vs_hf) if vs_hf else None,
            "warm_first_step_s": max(s["warm"]["to_first_step_s"] for s in out["sizes"]),
        }
        s = out["summary"]
        s["met"] = {
            "rss_growth": growth <= TARGETS["rss_growth"],
            "rss_mb": s["largest_tree_peak_rss_mb"] <= TARGETS["rss_mb"],
            "tokenize_vs_hf": None if s["tokenize_vs_hf"] is None else s["tokenize_vs_hf"] >= TARGETS["tokenize_vs_hf"],
            "warm_first_step_s": s["warm_first_step_s"] <= TARGETS["warm_first_step_s"],
        }
    out["machine"]["load_average_at_end"] = os.getloadavg()
    if "ddp" in out:
        out.setdefault("summary", {"met": {}})["met"]["ddp"] = out["ddp"]["met"]
    _write(out, args.out)
    print(json.dumps(out.get("summary"), indent=1))
    return 0


def _measured(path: str) -> dict[int, dict]:
    """The sizes an earlier run wrote to ``path``, each stamped with the commit that measured it."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        earlier = json.load(f)
    return {s["lines"]: {**s, "commit": s.get("commit", earlier.get("commit"))} for s in earlier.get("sizes", [])}


def _write(out: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(f"{path}.tmp", path)


def _commit() -> dict:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


if __name__ == "__main__":
    sys.exit(main())
