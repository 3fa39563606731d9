"""Ablations over seeds: ``bertlab ablate configs/ablations/NAME.yaml [--arms a,b] [--seeds 0,1,2]``.

Every arm runs with every seed under the same training budget (the ablation's common ``args``),
each run fit + test on the best validation checkpoint. An arm is a config delta layered over the
``base`` configs, optionally with its own ``args``, or a whole ``pipeline`` (multi-stage recipes
such as task-adaptive pre-training or self-distillation), whose last stage is scored.

Results go to ``ROOT/results.json``, ``ROOT/results.md`` (mean ± std over seeds, the baseline
beside every arm, the command that reproduces the table) and ``ROOT/results.png``. Runs are
grouped in W&B by the ablation's name and tagged by arm and seed. Finished runs are skipped on
re-run, so an interrupted ablation resumes.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.yaml_files import read_yaml
from bertlab.pipeline import Stage, _as_args, check_stages, load_pipeline, preflight_stages, run_stages

ARM_KEYS = {"name", "config", "args", "pipeline", "note"}


def load_ablation(path: str) -> dict:
    spec = read_yaml(path, "ablation file") or {}
    if not isinstance(spec, dict):
        raise BertlabError(f"{path}: an ablation is a mapping with name, base, args, seeds, arms, ...")
    unknown = set(spec) - {"name", "root", "base", "args", "seeds", "metrics", "baseline", "arms"}
    if unknown:
        raise BertlabError(f"{path}: unknown key(s) {sorted(unknown)}")
    spec.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    spec.setdefault("root", os.path.join("runs", "ablations", spec["name"]))
    spec.setdefault("seeds", [0, 1, 2])
    spec.setdefault("metrics", ["test/acc", "test/f1"])
    spec["base"] = [spec["base"]] if isinstance(spec.get("base"), str) else list(spec.get("base") or [])
    spec["args"] = _as_args(spec.get("args"), path)
    arms = spec.get("arms") or []
    if not arms:
        raise BertlabError(f"{path}: no arms")
    for arm in arms:
        bad = set(arm) - ARM_KEYS
        if bad or "name" not in arm:
            raise BertlabError(f"{path}: arm {arm.get('name', '?')!r}: needs a name; unknown key(s) {sorted(bad)}")
        arm["config"] = [arm["config"]] if isinstance(arm.get("config"), str) else list(arm.get("config") or [])
        arm["args"] = _as_args(arm.get("args"), f"{path}: arm {arm['name']}")
        for cfg in spec["base"] + arm["config"]:
            if not os.path.isfile(cfg):
                raise BertlabError(f"{path}: arm {arm['name']}: config file {cfg!r} does not exist")
            read_yaml(cfg)
        if arm.get("pipeline"):
            check_stages(load_pipeline(arm["pipeline"])[1])  # now rather than after an hour of other arms
    spec.setdefault("baseline", arms[0]["name"])
    return spec


def _arm_run(spec: dict, arm: dict, seed: int) -> tuple[list[Stage], str, str, list[str]]:
    """(stages, root, label, run-wide arguments) of one arm with one seed."""
    root = os.path.join(spec["root"], arm["name"], f"seed{seed}")
    extra = [
        "--seed_everything",
        str(seed),
        "--wandb.group",
        spec["name"],
        "--wandb.tags",
        json.dumps([arm["name"], f"seed{seed}"]),
    ]
    if arm.get("pipeline"):
        _, stages = load_pipeline(arm["pipeline"])
        return stages, root, arm["pipeline"], spec["args"] + arm["args"] + extra
    stage = Stage(
        name="run", config=spec["base"] + arm["config"], args=spec["args"] + arm["args"], init_from="none", test=True
    )
    return [stage], root, arm["name"], extra


def _run_arm(spec: dict, arm: dict, seed: int) -> dict:
    stages, root, label, extra = _arm_run(spec, arm, seed)
    summary = run_stages(stages, root, label, extra_args=extra)
    return summary["stages"][-1]["metrics"].get("test", {})


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def write_report(spec: dict, results: dict, command: str) -> str:
    metrics, base = spec["metrics"], spec["baseline"]
    lines = [
        f"# Ablation `{spec['name']}`",
        "",
        f"Seeds: {spec['seeds']}. Same budget for every arm: `{' '.join(spec['args']) or '(the base configs)'}`.",
        f"Reproduce: `{command}`",
        "",
        "| arm | n | " + " | ".join(f"{m} (mean ± std)" for m in metrics) + f" | Δ {metrics[0]} vs {base} |",
        "|---|---|" + "---|" * (len(metrics) + 1),
    ]
    base_mean = mean_std(results[base][metrics[0]])[0] if results.get(base, {}).get(metrics[0]) else None
    for arm, per_metric in results.items():
        cells = []
        for m in metrics:
            vals = per_metric.get(m, [])
            cells.append("—" if not vals else "{:.4f} ± {:.4f}".format(*mean_std(vals)))
        first = per_metric.get(metrics[0], [])
        delta = "—" if not first or base_mean is None or arm == base else f"{mean_std(first)[0] - base_mean:+.4f}"
        lines.append(f"| {arm} | {len(first)} | " + " | ".join(cells) + f" | {delta} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(spec["root"], "results.md"), "w") as f:
        f.write(text)
    _plot(spec, results)
    return text


def _plot(spec: dict, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = spec["metrics"][0]
    arms = [a for a in results if results[a].get(metric)]
    if not arms:
        return
    stats = [mean_std(results[a][metric]) for a in arms]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(arms)), 3.5))
    ax.bar(range(len(arms)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="#4C72B0")
    for i, a in enumerate(arms):
        ax.scatter([i] * len(results[a][metric]), results[a][metric], color="black", s=10, zorder=3)
    ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
    lo, hi = min(min(results[a][metric]) for a in arms), max(max(results[a][metric]) for a in arms)
    pad = 0.1 * (hi - lo) + 0.02
    if 0.0 <= lo and hi <= 1.0:  # a rate: keep the axis inside [0, 1]
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    else:
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(metric)
    ax.set_title(f"{spec['name']}: mean ± std over seeds {spec['seeds']}")
    fig.tight_layout()
    fig.savefig(os.path.join(spec["root"], "results.png"), dpi=120)
    plt.close(fig)


def _record(store: str, arm: str | None, seed: int | None, test: dict | None, metrics: list[str]) -> dict:
    """Merge one run into ``results.json`` under a file lock (several ``bertlab ablate --arms`` may share it)."""
    import fcntl

    with open(store + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.load(open(store)) if os.path.isfile(store) else {}
        if arm is not None:
            per = results.setdefault(arm, {})
            runs = per.setdefault("_runs", {})
            runs[str(seed)] = test
            for m in metrics:
                per[m] = [runs[s][m] for s in sorted(runs, key=int) if m in runs[s]]
            with atomic_path(store) as tmp, open(tmp, "w") as f:
                json.dump(results, f, indent=1)
    return results


def run_ablation(path: str, arms: list[str] | None = None, seeds: list[int] | None = None) -> str:
    spec = load_ablation(path)
    if seeds:
        spec["seeds"] = seeds
    chosen = [a for a in spec["arms"] if not arms or a["name"] in arms]
    unknown = set(arms or []) - {a["name"] for a in spec["arms"]}
    if unknown:
        raise BertlabError(f"{path}: no arm(s) {sorted(unknown)}; arms: {[a['name'] for a in spec['arms']]}")
    for arm in chosen:  # every arm's every stage, before the first one trains
        stages, root, _, extra = _arm_run(spec, arm, spec["seeds"][0])
        preflight_stages(stages, root, extra)
    os.makedirs(spec["root"], exist_ok=True)
    store = os.path.join(spec["root"], "results.json")
    for arm in chosen:
        for seed in spec["seeds"]:
            test = _run_arm(spec, arm, seed)
            results = _record(store, arm["name"], seed, test, spec["metrics"])
    results = _record(store, None, None, None, spec["metrics"])
    order = [a["name"] for a in spec["arms"] if a["name"] in results]
    return write_report(spec, {a: results[a] for a in order}, f"bertlab ablate {path}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bertlab ablate", description="Run every arm of an ablation with every seed; report mean ± std."
    )
    parser.add_argument("ablation", help="ablation YAML (configs/ablations/NAME.yaml)")
    parser.add_argument("--arms", help="comma-separated subset of arms")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the file's)")
    ns = parser.parse_args(argv)
    text = run_ablation(
        ns.ablation,
        ns.arms.split(",") if ns.arms else None,
        [int(s) for s in ns.seeds.split(",")] if ns.seeds else None,
    )
    print(text)
    return 0
