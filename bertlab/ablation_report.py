"""An ablation's report: ``results.md`` (mean ± std per arm, the baseline beside it, paired statistics from
``bertlab.stats``, the command that reproduces it), ``results.csv`` (one row per run) and ``results.png``.

Built from ``results.json`` (per arm, ``_runs``: seed → test metrics) and, for the McNemar test, each run's
``test_predictions.npz``, found through the run's ``summary.json``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bertlab.core.files import atomic_path
from bertlab.stats import ALPHA, paired_cells


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def run_dir(root: str, arm: str, seed: int | str) -> str | None:
    """Where a finished run's scored (last) stage wrote its ``test_metrics.json``, from its ``summary.json``."""
    summary = os.path.join(root, arm, f"seed{seed}", "summary.json")
    if not os.path.isfile(summary):
        return None
    with open(summary) as f:
        stages = json.load(f).get("stages") or [{}]
    export = stages[-1].get("export")
    return os.path.dirname(export) if export else None


def _predictions(root: str):
    from callbacks.test_predictions import load_test_predictions  # here: a run's job need not import Lightning

    def load(arm: str, seed: int):
        where = run_dir(root, arm, seed)
        return load_test_predictions(where) if where else None

    return load


def _bases(spec: dict, arms) -> dict[str, str]:
    """Each arm's baseline: its own ``baseline`` (e.g. ``pet_500`` against ``finetune_500``) or the file's."""
    own = {a["name"]: a.get("baseline") for a in spec.get("arms", [])}
    return {arm: own.get(arm) or spec["baseline"] for arm in arms}


def write_report(spec: dict, results: dict, command: str) -> str:
    metrics = spec["metrics"]
    runs = {arm: per.get("_runs", {}) for arm, per in results.items()}
    bases = _bases(spec, results)
    one = len(set(bases.values())) == 1
    base = spec["baseline"] if one else "baseline"
    paired = {}
    for b in set(bases.values()):
        group = {arm: r for arm, r in runs.items() if arm == b or bases[arm] == b}
        cells = paired_cells(group, b, metrics[0], _predictions(spec["root"]))
        paired |= {arm: cell for arm, cell in cells.items() if bases[arm] == b and arm != b}
    lines = [
        f"# Ablation `{spec['name']}`",
        "",
        f"Seeds: {spec['seeds']}. Same budget for every arm: `{' '.join(spec['args']) or '(the base configs)'}`.",
        f"Reproduce: `{command}`",
        "",
        "| arm | n | "
        + " | ".join(f"{m} (mean ± std)" for m in metrics)
        + f" | Δ {metrics[0]} vs {base} | paired Δ [95 % CI] | McNemar p vs {base} |",
        "|---|---|" + "---|" * (len(metrics) + 3),
    ]
    for arm, per_metric in results.items():
        cells = []
        for m in metrics:
            vals = per_metric.get(m, [])
            cells.append("—" if not vals else "{:.4f} ± {:.4f}".format(*mean_std(vals)))
        first, b = per_metric.get(metrics[0], []), bases[arm]
        base_vals = results.get(b, {}).get(metrics[0])
        delta = "—" if not first or not base_vals or arm == b else f"{mean_std(first)[0] - mean_std(base_vals)[0]:+.4f}"
        if not one and arm != b:
            delta = f"{delta} (vs {b})"
        ci, mc = paired.get(arm, ("—", "—") if arm == b else ("—", "n/a"))
        lines.append(f"| {arm} | {len(first)} | " + " | ".join(cells) + f" | {delta} | {ci} | {mc} |")
    lines += [
        "",
        f"Paired Δ: seed s of an arm minus seed s of {base}, mean and 95 % bootstrap CI over seeds (coarse: with "
        "3 seeds it excludes 0 only when every seed moves the same way). McNemar: exact test on the test examples "
        "one run got right and the other wrong, per seed; n/a where a run saved no test predictions. "
        f"* marks p < {ALPHA} or a CI that excludes 0.",
    ]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(spec["root"], "results.md"), "w") as f:
        f.write(text)
    _write_csv(spec, runs)
    _plot(spec, results)
    return text


def _write_csv(spec: dict, runs: dict) -> None:
    """``results.csv``: one row per finished run (ablation, arm, seed, then every test metric it logged)."""
    import pandas as pd

    rows = [
        {"ablation": spec["name"], "arm": arm, "seed": int(seed), **(metrics or {})}
        for arm, per_seed in runs.items()
        for seed, metrics in sorted(per_seed.items(), key=lambda kv: int(kv[0]))
    ]
    frame = pd.DataFrame(
        rows, columns=["ablation", "arm", "seed"] + sorted({k for r in rows for k in r} - {"ablation", "arm", "seed"})
    )
    with atomic_path(os.path.join(spec["root"], "results.csv")) as tmp:
        frame.to_csv(tmp, index=False)


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
