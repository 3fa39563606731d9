"""The pre-training-steps curve of an ablation whose arms fine-tune from milestones of one MLM run.

For an ablation with ``from_milestone`` arms (``bertlab.shared_pretraining``), ``bertlab ablate``
also writes ``ROOT/curve.json`` and ``ROOT/curve.png``: downstream test accuracy after fine-tuning
(mean ± std over seeds) against MLM steps, an arm without pre-training as step 0, beside the same
MLM run's linear-probe accuracy on the val split (``DownstreamProbe``'s ``probe_history.json``) and
its MLM val perplexity (the CSV log), so one picture answers "when should further pre-training stop?".
With several pre-training groups, the probe and perplexity shown are the first milestone arm's group's.
"""

from __future__ import annotations

import csv
import glob
import json
import os

from bertlab.ablation_report import mean_std
from bertlab.ablation_spec import Ablation, Arm
from bertlab.core.files import atomic_path
from bertlab.pipeline_spec import stage_dir
from bertlab.shared_pretraining import pretrain_root


def _step(arm: Arm) -> int | None:
    if arm.from_milestone is not None:
        return int(arm.from_milestone)
    return None if arm.pipeline else 0


def _mlm_logs(spec: Ablation, arm: Arm) -> tuple[dict, dict]:
    """(probe accuracy by step, MLM val perplexity by step) of the arm's shared pre-training run (with several
    pre-training seeds, the first one's)."""
    *pre, _ = arm.stages()
    where = stage_dir(pretrain_root(spec, arm, spec.pretraining_seeds[0]), pre[-1].name)
    probe, perplexity = {}, {}
    history = os.path.join(where, "probe_history.json")
    if os.path.isfile(history):
        with open(history) as f:
            probe = {int(k): v for k, v in json.load(f)["history"].items()}
    for log in sorted(glob.glob(os.path.join(where, "csv", "*", "metrics.csv"))):
        with open(log, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("val/perplexity"):
                    perplexity[int(row["step"]) + 1] = float(row["val/perplexity"])  # logged at the step before
    return probe, perplexity


def curve(spec: Ablation, results: dict, metric: str = "test/acc") -> dict:
    points = []
    for arm in spec.arms:
        step, values = _step(arm), results.get(arm.name, {}).get(metric, [])
        if step is not None and values:
            mean, std = mean_std(values)
            points.append({"arm": arm.name, "step": step, "n": len(values), "mean": mean, "std": std})
    milestone = next((a for a in spec.arms if a.from_milestone is not None), None)
    probe, perplexity = _mlm_logs(spec, milestone) if milestone else ({}, {})
    return {
        "metric": metric,
        "fine_tuned": sorted(points, key=lambda p: p["step"]),
        "probe_val_acc": dict(sorted(probe.items())),
        "mlm_val_perplexity": dict(sorted(perplexity.items())),
    }


def write_curve(spec: Ablation, results: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curve(spec, results)
    with atomic_path(os.path.join(spec.root, "curve.json")) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True)
    pts = data["fine_tuned"]
    if pts:
        top.errorbar([p["step"] for p in pts], [p["mean"] for p in pts], [p["std"] for p in pts], marker="o", capsize=3)
    top.set_ylabel(f"fine-tuned {data['metric']}\n(mean ± std over seeds)")
    top.set_title(spec.name)
    if data["probe_val_acc"]:
        bottom.plot(list(data["probe_val_acc"]), list(data["probe_val_acc"].values()), marker=".", color="C1")
    bottom.set_ylabel("linear probe val acc", color="C1")
    if data["mlm_val_perplexity"]:
        twin = bottom.twinx()
        twin.plot(list(data["mlm_val_perplexity"]), list(data["mlm_val_perplexity"].values()), color="C2", ls="--")
        twin.set_ylabel("MLM val perplexity", color="C2")
    bottom.set_xlabel("further pre-training (MLM) steps")
    fig.tight_layout()
    with atomic_path(os.path.join(spec.root, "curve.png")) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return data
