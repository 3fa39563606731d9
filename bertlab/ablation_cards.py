"""An ablation's verdict in the model card of every export it scored.

A run's export card (``callbacks.model_card``) says what one seed scored. When that export comes from an
ablation, one seed's number is not the claim: ``annotate_cards`` adds, under ``bertlab.ablation`` in the
card's front matter and as a section of its text, the table it belongs to, its arm and seed, the arm's mean
± std over its seeds, and its difference from the baseline with the paired interval, the Holm p and the
verdict of the table (``bertlab.stats``). Each card is replaced atomically; an export without a bertlab
card (e.g. a run from before cards existed) is left alone.
"""

from __future__ import annotations

import os

from bertlab.ablation_report import compare_table, mean_std, run_export
from bertlab.core.files import atomic_path
from callbacks import model_card


def arm_facts(meta: dict, results: dict, arm: str) -> dict:
    """What the table says of ``arm``: its mean ± std, and its comparison with its baseline when it has one."""
    metric = meta["metrics"][0]
    base = meta["bases"].get(arm, meta["baseline"])
    values = [float(r[metric]) for r in results[arm].get("_runs", {}).values() if r and metric in r]
    mean, std = mean_std(values) if values else (float("nan"), 0.0)
    facts = {
        "table": meta["name"],
        "arm": arm,
        "metric": metric,
        "seeds": len(values),
        "mean": round(mean, 6),
        "std": round(std, 6),
        "baseline": base,
        "command": meta.get("command"),
    }
    cmp = compare_table(meta, results).get(arm)
    if cmp is not None:
        iv = cmp.interval
        facts["difference"] = {
            "mean": round(iv.mean, 6),
            "low": None if iv.low is None else round(iv.low, 6),
            "high": None if iv.high is None else round(iv.high, 6),
            "confidence": iv.confidence,
            "units": iv.units,
            "holm_p": None if cmp.holm_p is None else round(cmp.holm_p, 6),
            "verdict": cmp.verdict,
        }
    return facts


def annotate_cards(root: str, meta: dict, results: dict) -> int:
    """Write each finished run's ablation facts into its export's card; returns how many cards changed."""
    changed = 0
    for arm, per in results.items():
        if arm.startswith("_"):
            continue
        facts = arm_facts(meta, results, arm)
        for seed in per.get("_runs", {}):
            where = run_export(root, arm, seed)
            card = model_card.read_card(where) if where else None  # None: no bertlab card there
            if card is None:
                continue
            new = {**facts, "seed": int(seed)}
            if card.get("ablation") == new:
                continue
            card["ablation"] = new
            with atomic_path(os.path.join(where, model_card.CARD)) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(model_card.render(card))
            changed += 1
    return changed
