"""An ablation's table, computed from its ``results.json`` alone: ``results.md`` (mean ± std per arm, the
difference from the baseline with its tested interval, Holm-adjusted p, the verdict word and the smallest
effect the table could detect), ``results.csv`` (one row per run, with its commit) and ``results.png``.

``results.json`` holds, per arm, ``_runs`` (seed → test metrics, provenance, pre-training seed),
``_mcnemar`` (seed → [b, c] discordant test examples against the arm's baseline, counted at ``bertlab ablate``
time from the runs' ``test_predictions.npz``) and ``_table`` (what the table needs of the ablation file), so
that ``bertlab report`` rebuilds every number from committed JSON.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bertlab.ablation_spec import Ablation
from bertlab.core.files import atomic_path, file_lock
from bertlab.stats import MIN_UNITS, compare_arms, exact_mcnemar, mcnemar, pooled_mcnemar

MASKING_KEYS = ("train/mask_important_fraction", "train/mask_rate")


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def run_export(root: str, arm: str, seed: int | str) -> str | None:
    """The export of a finished run's scored (last) stage, from its ``summary.json``."""
    summary = os.path.join(root, arm, f"seed{seed}", "summary.json")
    if not os.path.isfile(summary):
        return None
    with open(summary) as f:
        stages = json.load(f).get("stages") or [{}]
    return stages[-1].get("export") or None


def run_dir(root: str, arm: str, seed: int | str) -> str | None:
    """Where a finished run's scored (last) stage wrote its ``test_metrics.json``."""
    export = run_export(root, arm, seed)
    return os.path.dirname(export) if export else None


def table_meta(spec: Ablation, command: str) -> dict:
    """What the table needs of the ablation file, kept in ``results.json`` beside the runs."""
    return {
        "name": spec.name,
        "baseline": spec.baseline,
        "bases": {a.name: a.baseline for a in spec.arms if a.baseline},
        "metrics": spec.metrics,
        "args": spec.args,
        "seeds": spec.seeds,
        "pretrain_seeds": spec.pretraining_seeds,
        "command": command,
        "order": [a.name for a in spec.arms],
        "interval_method": "paired t-intervals (bertlab.stats.paired_interval)",
    }


def count_mcnemar(root: str, results: dict, meta: dict) -> None:
    """Each arm's discordant test examples against its baseline, per seed, into ``results[arm]["_mcnemar"]``."""
    from callbacks.test_predictions import load_test_predictions  # here: a run's job need not import Lightning

    def load(arm, seed):
        where = run_dir(root, arm, seed)
        return load_test_predictions(where) if where else None

    for arm, per in results.items():
        base = meta["bases"].get(arm, meta["baseline"])
        if arm == base or base not in results:
            continue
        counts = {}
        for seed in sorted(set(per.get("_runs", {})) & set(results[base].get("_runs", {})), key=int):
            test = mcnemar(load(base, seed), load(arm, seed))
            if test is not None:
                counts[seed] = [test.only_base, test.only_arm]
        per["_mcnemar"] = counts


def _value(run: dict | None, metric: str) -> float:
    return float(run[metric]) if run and metric in run else float("nan")


def differences(arm_runs: dict, base_runs: dict, metric: str) -> np.ndarray | None:
    """Paired differences, seed by seed: 2-D (rows: pre-training seeds) when either side was pre-trained under
    several seeds, else 1-D. None when no seed is paired."""
    seeds = sorted((set(arm_runs) & set(base_runs)), key=int)
    pairs = {s: _value(arm_runs[s], metric) - _value(base_runs[s], metric) for s in seeds}
    pairs = {s: d for s, d in pairs.items() if np.isfinite(d)}
    if not pairs:
        return None
    rows_of = {s: (arm_runs[s] or {}).get("pretrain_seed", (base_runs[s] or {}).get("pretrain_seed")) for s in pairs}
    keys = sorted({r for r in rows_of.values() if r is not None})
    if len(keys) < 2:
        return np.array(list(pairs.values()))
    rows = [[d for s, d in pairs.items() if rows_of[s] == k] for k in keys]
    width = max(map(len, rows))
    return np.array([r + [np.nan] * (width - len(r)) for r in rows])


def commits(runs: dict) -> set[str]:
    out = set()
    for run in runs.values():
        for prov in [(run or {}).get("provenance") or {}] + list((run or {}).get("pretrain_provenance") or []):
            out.add((prov.get("commit") or "unrecorded")[:7] + ("+dirty" if prov.get("dirty") else ""))
    return out


def compare_table(meta: dict, results: dict) -> dict:
    """Every arm's comparison with its baseline (``bertlab.stats.Comparison``), adjusted together: the arms
    of one table are one family."""
    bases = {arm: meta["bases"].get(arm, meta["baseline"]) for arm in results}
    runs = {arm: per.get("_runs", {}) for arm, per in results.items()}
    diffs = {}
    references = set(bases.values())  # an arm that is some arm's baseline is a reference, not a recipe
    for arm in results:
        b = bases[arm]
        if arm not in references and b in runs:
            d = differences(runs[arm], runs[b], meta["metrics"][0])
            if d is not None:
                diffs[arm] = d
    return compare_arms(diffs)


def render_table(meta: dict, results: dict, notes: bool = True) -> list[str]:
    """The table's markdown lines (header, rows and, with ``notes``, how to read them), from ``results.json``
    and its ``_table`` alone."""
    metrics, base0 = meta["metrics"], meta["baseline"]
    bases = {arm: meta["bases"].get(arm, base0) for arm in results}
    runs = {arm: per.get("_runs", {}) for arm, per in results.items()}
    comparisons = compare_table(meta, results)
    mixed = len(set().union(*(commits(r) for r in runs.values()))) > 1 if runs else False
    pre = [(r or {}).get("pretrain_metrics", {}) for v in runs.values() for r in v.values()]
    extra = [k for k in MASKING_KEYS if any(k in p for p in pre)]
    head = ["arm", "n"] + [f"{m} (mean ± std)" for m in metrics]
    head += [f"Δ {metrics[0]} [95 % CI]", "units", "Holm p", "verdict", "detectable Δ", "McNemar p pooled (per seed)"]
    head += extra + (["commit"] if mixed else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, per in results.items():
        cells = [arm, ""]
        for m in metrics:
            vals = [float(r[m]) for r in runs[arm].values() if r and m in r] or per.get(m, [])
            cells.append("—" if not vals else "{:.4f} ± {:.4f}".format(*mean_std(vals)))
            cells[1] = cells[1] or str(len(vals))
        cmp = comparisons.get(arm)
        vs = "" if bases[arm] == base0 else f" (vs {bases[arm]})"
        if arm in set(bases.values()):
            cells += ["baseline", "—", "—", "—", "—", "—"]
        elif cmp is None:
            cells += ["— (no paired seeds)" + vs, "—", "—", "—", "—", "—"]
        else:
            counts = sorted(per.get("_mcnemar", {}).items(), key=lambda kv: int(kv[0]))
            mc = {s: exact_mcnemar(b, c) for s, (b, c) in counts}
            pooled = pooled_mcnemar(list(mc.values()))
            per_seed = ", ".join(f"s{s}: {t}" for s, t in mc.items())
            cells += [
                f"{cmp.interval}{vs}",
                str(cmp.interval.units),
                "—" if cmp.holm_p is None else f"{cmp.holm_p:.3g}",
                cmp.verdict,
                "—" if cmp.detectable is None else f"{cmp.detectable:.4f}",
                "n/a" if pooled is None else f"{pooled} ({per_seed})",
            ]
        for k in extra:
            vals = [r["pretrain_metrics"][k] for r in runs[arm].values() if k in (r or {}).get("pretrain_metrics", {})]
            cells.append("—" if not vals else f"{np.mean(vals):.3f}")
        if mixed:
            cells.append(", ".join(sorted(commits(runs[arm]))) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    if not notes:
        return lines
    m = max(1, len(comparisons))
    lines += [
        "",
        f"Δ: an arm's run minus the {base0 if len(set(bases.values())) == 1 else 'baseline'}'s run with the same "
        "fine-tune seed, with a paired t-interval (coverage tested by simulation); with several pre-training "
        "seeds the pre-training run is the unit (differences averaged within it; `units` counts them). "
        f"Holm p: the paired t-test, adjusted over the {m} comparison(s) of the table. Verdict: gain or "
        "loss only when the Holm p is below 0.05 (the interval at Holm's level for that arm then excludes 0), "
        f"else no detectable difference ± that interval's half-width; 'too few seeds' below {MIN_UNITS} units. "
        "Detectable Δ: the smallest true difference this many units "
        "with the observed spread detect with 80 % power at α = 0.05. McNemar: per-example test on the runs' "
        "test predictions, pooled over seeds by Cochran–Mantel–Haenszel (optimistic: the seeds share test "
        "examples), per seed in brackets.",
    ]
    return lines


def write_report(spec: Ablation, results: dict, command: str) -> str:
    """``results.md``, ``results.csv`` and ``results.png`` under the ablation's root; returns the markdown."""
    meta = table_meta(spec, command)
    count_mcnemar(spec.root, results, meta)
    store = os.path.join(spec.root, "results.json")
    # keep what the table needs beside the runs (bertlab report reads only this), under the lock with which
    # `bertlab.ablation_run.record` merges runs: another `bertlab ablate --arms` may be recording one right now
    with file_lock(store):
        if os.path.isfile(store):
            with open(store) as f:
                saved = json.load(f)
            for arm, per in results.items():
                saved.setdefault(arm, {})["_mcnemar"] = per.get("_mcnemar", {})
            saved["_table"] = meta
            with atomic_path(store) as tmp, open(tmp, "w") as f:
                json.dump(saved, f, indent=1)
    seeds = f"Seeds: {meta['seeds']}"
    if len(meta["pretrain_seeds"]) > 1:
        seeds += f", nested under pre-training seeds {meta['pretrain_seeds']}"
    lines = [
        f"# Ablation `{spec.name}`",
        "",
        f"{seeds}. Same budget for every arm: `{' '.join(spec.args) or '(the base configs)'}`.",
        f"Reproduce: `{command}`",
        "",
        *render_table(meta, results),
    ]
    text = "\n".join(lines) + "\n"
    with atomic_path(os.path.join(spec.root, "results.md")) as tmp, open(tmp, "w") as f:
        f.write(text)
    write_csv(spec.name, {arm: per.get("_runs", {}) for arm, per in results.items()}, spec.root)
    _plot(spec, results)
    return text


def write_csv(name: str, runs: dict, root: str) -> None:
    """``results.csv``: one row per finished run (ablation, arm, seed, pre-training seed, commit, code, then every
    test metric it logged)."""
    import pandas as pd

    rows = []
    for arm, per_seed in runs.items():
        for seed, metrics in sorted(per_seed.items(), key=lambda kv: int(kv[0])):
            metrics = dict(metrics or {})
            prov = metrics.pop("provenance", None) or {}
            for key in ("pretrain_provenance", "pretrain_metrics", "fit"):
                metrics.pop(key, None)
            rows.append(
                {
                    "ablation": name,
                    "arm": arm,
                    "seed": int(seed),
                    "commit": prov.get("commit"),
                    "dirty": prov.get("dirty"),
                    "code": prov.get("code"),
                    **metrics,
                }
            )
    fixed = ["ablation", "arm", "seed", "pretrain_seed", "commit", "dirty", "code"]
    frame = pd.DataFrame(rows, columns=fixed + sorted({k for r in rows for k in r} - set(fixed)))
    with atomic_path(os.path.join(root, "results.csv")) as tmp:
        frame.to_csv(tmp, index=False)


def _plot(spec: Ablation, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = spec.metrics[0]
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
    ax.set_title(f"{spec.name}: mean ± std over seeds {spec.seeds}")
    fig.tight_layout()
    with atomic_path(os.path.join(spec.root, "results.png")) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
