"""``make bench``: bertlab against what a user would run instead, side by side, end to end, in one run.

Every arm is a separate process started the way a user starts it — ``bertlab fit`` with the shipped
configs (plus ``callbacks.step_timer.StepTimer``), or ``benchmarks/hf_anchors.py`` for HF's
``run_mlm`` recipe and HF ``Trainer`` — on the same fine-food reviews, MiniLM, batch 32, the same
thread count, fp32 and bf16. Arms are interleaved repeat by repeat (the order rotates), because a
shared machine drifts. Each run times steps from the end of one to the end of the next, after
``--warmup`` steps; an arm's figure is its best repeat (its minimum step time is reported too), and
the spread over repeats is the noise. Ratios are bertlab ÷ HF at the same precision.

Memory: each run reports its own peak RSS (``ru_maxrss``), start-up, tokenisation and model
included, which is the peak of that stage.

Allocator: bertlab runs on tcmalloc where it is installed (``bertlab.allocator``); the HF anchors run on
glibc's malloc, as a user starts them. The ``*_glibc`` arms are bertlab on glibc's malloc
(``BERTLAB_ALLOCATOR=system``), so the table shows what the allocator adds on its own.

    python benchmarks/bench.py --repeats 2 --steps 30 --out runs/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {("mlm", "bf16"): 3.0, ("mlm", "fp32"): 2.5, ("classify", "bf16"): 1.3, ("classify", "fp32"): 1.3}
CONFIGS = {"mlm": "configs/mlm/fine_food_tapt.yaml", "classify": "configs/classify/fine_food.yaml"}
PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}
SYSTEM_MALLOC = {"BERTLAB_ALLOCATOR": "system"}  # bertlab on glibc's malloc, as the HF anchors run
ARMS = {  # name: (task, who, extra bertlab args, extra environment)
    "hf_run_mlm": ("mlm", "hf", [], {}),
    "bertlab_mlm": ("mlm", "bertlab", [], {}),
    "bertlab_mlm_glibc": ("mlm", "bertlab", [], SYSTEM_MALLOC),
    "bertlab_mlm_packed": ("mlm", "bertlab", ["--data.init_args.mode", "packed"], {}),
    "hf_trainer_classify": ("classify", "hf", [], {}),
    "bertlab_classify": ("classify", "bertlab", [], {}),
    "bertlab_classify_glibc": ("classify", "bertlab", [], SYSTEM_MALLOC),
}


def command(arm: str, precision: str, args, out_json: str, root: str) -> list[str]:
    task, who, extra, _ = ARMS[arm]
    if who == "hf":
        script = os.path.join(ROOT, "benchmarks", "hf_anchors.py")
        return [sys.executable, script, task, "--precision", precision, "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--model", args.model, "--max-length", str(args.max_length),
                "--out", out_json]  # fmt: skip
    return [
        sys.executable, "-m", "bertlab.cli", "fit", "--config", os.path.join(ROOT, CONFIGS[task]),
        "--trainer.max_steps", str(args.warmup + args.steps), "--trainer.limit_val_batches", "0",
        "--trainer.precision", PRECISION[precision], "--trainer.default_root_dir", root,
        "--trainer.callbacks+=callbacks.step_timer.StepTimer", "--trainer.callbacks.output_path", out_json,
        "--trainer.callbacks.warmup", str(args.warmup), "--model.init_args.model_name_or_path", args.model,
        "--data.init_args.max_length", str(args.max_length), *extra,
    ]  # fmt: skip


def run_once(arm: str, precision: str, args, workdir: str, repeat: int) -> dict:
    out_json = os.path.join(workdir, f"{arm}-{precision}-{repeat}.json")
    root = os.path.join(workdir, f"{arm}-{precision}-{repeat}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), WANDB_MODE="disabled", PYTHONPATH=ROOT, **ARMS[arm][3])
    started = time.perf_counter()
    proc = subprocess.run(
        command(arm, precision, args, out_json, root),
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0 or not os.path.isfile(out_json):
        raise SystemExit(f"bench: {arm} {precision} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(out_json) as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - started
    shutil.rmtree(root, ignore_errors=True)  # its checkpoint and export: ~0.4 GB a run, 28 runs
    logged = re.search(r"bertlab: allocator (\S+)", proc.stdout + proc.stderr)
    result["allocator"] = logged.group(1) if logged else "glibc"  # the HF anchors run as a user starts them
    return result


def summarise(runs: dict) -> dict:
    rows = {}
    for (arm, precision), results in runs.items():
        task = ARMS[arm][0]
        key = "tokens_per_s" if task == "mlm" else "samples_per_s"
        best = max(results, key=lambda r: r[key])
        rows[f"{arm}/{precision}"] = {
            "arm": arm, "task": task, "precision": precision, "metric": key, "best": best[key],
            "repeats": [r[key] for r in results], "min_step_s": min(r["min_step_s"] for r in results),
            "model_tflops_per_s": best.get("model_tflops_per_s"), "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "timed_steps": best["timed_steps"], "mean_width": _mean_width(best), "allocator": best["allocator"],
        }  # fmt: skip
    for row in rows.values():
        anchor = rows.get(f"{'hf_run_mlm' if row['task'] == 'mlm' else 'hf_trainer_classify'}/{row['precision']}")
        if anchor and ARMS[row["arm"]][1] == "bertlab":
            row["vs_hf"] = row["best"] / anchor["best"]
            row["target"] = TARGETS[(row["task"], row["precision"])]
            row["rss_vs_hf"] = row["peak_rss_mb"] / anchor["peak_rss_mb"]
    return rows


def _mean_width(result: dict) -> float | None:
    steps = [s for s in result.get("steps", []) if "width" in s]
    return sum(s["width"] for s in steps) / len(steps) if steps else None


def markdown(rows: dict, args, machine: str) -> str:
    lines = [
        f"Machine: {machine}; {args.threads} thread(s); batch 32; {args.steps} timed steps after {args.warmup}; "
        f"best of {args.repeats} interleaved repeat(s) (all repeats listed: their spread is the noise).",
        "",
        "| arm | precision | allocator | throughput | repeats | min step s | bertlab ÷ HF (target) | model TFLOP/s "
        "| peak RSS MB | RSS ÷ HF |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        unit = "tok/s" if r["metric"] == "tokens_per_s" else "samples/s"
        ratio = (
            f"**{r['vs_hf']:.2f}×** ({r['target']}×)"
            if "vs_hf" in r
            else "anchor"
            if ARMS[r["arm"]][1] == "hf"
            else "–"
        )
        rss = f"{r['rss_vs_hf']:.2f}" if "rss_vs_hf" in r else "–"
        repeats = ", ".join(f"{v:,.0f}" for v in r["repeats"])
        lines.append(
            f"| {r['arm']} | {r['precision']} | {r['allocator']} | {r['best']:,.1f} {unit} | {repeats} | "
            f"{r['min_step_s']:.3f} | {ratio} | {r['model_tflops_per_s'] or 0:.3f} | {r['peak_rss_mb']:,.0f} | {rss} |"
        )
    lines += ["", "GPU MFU: not measured here (no GPU lent); `benchmarks/gpu_mfu.sh` is the command."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--model", default="minilm", help="model directory or built-in name (a tiny one for smoke runs)")
    p.add_argument("--max-length", type=int, default=128, help="sequence length of every arm (the configs' 128)")
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    plan = [(a, pr) for pr in args.precisions.split(",") for a in args.arms.split(",")]
    runs: dict = {key: [] for key in plan}
    with tempfile.TemporaryDirectory(prefix="bertlab-bench-") as workdir:
        for repeat in range(args.repeats):
            order = plan[repeat % len(plan) :] + plan[: repeat % len(plan)]
            for arm, precision in order:
                result = run_once(arm, precision, args, workdir, repeat)
                runs[(arm, precision)].append(result)
                metric = "tokens_per_s" if ARMS[arm][0] == "mlm" else "samples_per_s"
                print(f"repeat {repeat}: {arm:<22} {precision}: {result[metric]:9.1f} {metric}", flush=True)
    rows = summarise(runs)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump({"args": vars(args), "machine": machine, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(markdown(rows, args, machine))
    print(markdown(rows, args, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
