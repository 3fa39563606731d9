"""Paired statistics of ablation tables: bootstrap CI over seeds, exact McNemar over test examples, and the
table and ``results.csv`` they go into (runs without saved predictions show n/a)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from bertlab.ablation_report import write_report
from bertlab.stats import mcnemar, paired_delta_ci


def test_bootstrap_ci_is_coarse_at_three_seeds():
    ci = paired_delta_ci({0: 0.9, 1: 0.95, 2: 1.0}, {0: 0.8, 1: 0.9, 2: 1.0})  # deltas 0.1, 0.05, 0
    assert ci.mean == pytest.approx(0.05) and ci.n == 3
    # a resample of all-zero deltas has probability 1/27 > 2.5 %: the CI spans the deltas' range, touching 0
    assert (ci.low, ci.high) == (pytest.approx(0.0), pytest.approx(0.1)) and not ci.significant
    worse = paired_delta_ci({0: 0.7, 1: 0.85, 2: 0.9}, {0: 0.8, 1: 0.9, 2: 1.0})  # every seed lower
    assert worse.high < 0 and worse.significant and str(worse).endswith("*")
    one = paired_delta_ci({0: 0.9, 5: 0.1}, {0: 0.8})  # only seed 0 is paired
    assert one.n == 1 and one.low is None and str(one) == "+0.1000 (n=1, no CI)"
    assert paired_delta_ci({1: 0.9}, {0: 0.8}) is None


def _preds(right: np.ndarray) -> dict:
    labels = np.arange(len(right)) % 2
    return {"idx": np.arange(len(right)), "labels": labels, "preds": np.where(right, labels, 1 - labels)}


def test_mcnemar_counts_discordant_examples():
    base = np.array([True] * 10 + [False] * 10)
    arm = np.array([True] * 10 + [True] * 8 + [False] * 2)  # b = 0, c = 8
    result = mcnemar(_preds(base), _preds(arm))
    assert (result.only_base, result.only_arm) == (0, 8)
    assert result.p == pytest.approx(2 * 0.5**8) and str(result) == "0.00781*"
    assert mcnemar(_preds(base), _preds(base)).p == 1.0
    other = _preds(arm)
    other["idx"] = other["idx"] + 1  # another test set: no pairing
    assert mcnemar(_preds(base), other) is None and mcnemar(None, _preds(arm)) is None


def _finished_run(root, arm, seed, right=None):
    run = os.path.join(root, arm, f"seed{seed}", "run")
    os.makedirs(run)
    with open(os.path.join(root, arm, f"seed{seed}", "summary.json"), "w") as f:
        json.dump({"stages": [{"name": "run", "export": os.path.join(run, "export")}]}, f)
    if right is not None:  # runs finished before predictions were saved have none
        np.savez(os.path.join(run, "test_predictions.npz"), **_preds(right))


def test_report_pairs_seeds_and_examples(tmp_path):
    root = str(tmp_path)
    base_right = np.array([True] * 10 + [False] * 10)
    for seed in (0, 1):
        _finished_run(root, "base", seed, base_right)
        _finished_run(root, "mean", seed, np.array([True] * 18 + [False] * 2))
        _finished_run(root, "old", seed)
    runs = {
        "base": {"0": {"test/acc": 0.5, "test/f1": 0.4}, "1": {"test/acc": 0.5, "test/f1": 0.45}},
        "mean": {"0": {"test/acc": 0.9, "test/f1": 0.9}, "1": {"test/acc": 0.9, "test/f1": 0.85}},
        "old": {"0": {"test/acc": 0.6, "test/f1": 0.5}, "1": {"test/acc": 0.4, "test/f1": 0.3}},
    }
    results = {
        arm: {"_runs": r, **{m: [r[s][m] for s in ("0", "1")] for m in ("test/acc", "test/f1")}}
        for arm, r in runs.items()
    }
    spec = {
        "name": "toy",
        "root": root,
        "seeds": [0, 1],
        "args": [],
        "metrics": ["test/acc", "test/f1"],
        "baseline": "base",
    }
    lines = write_report(spec, results, "bertlab ablate toy.yaml").splitlines()
    assert lines[7] == "| base | 2 | 0.5000 ± 0.0000 | 0.4250 ± 0.0354 | — | — | — |"
    assert lines[8] == (
        "| mean | 2 | 0.9000 ± 0.0000 | 0.8750 ± 0.0354 | +0.4000 | +0.4000 [+0.4000, +0.4000]* | "
        "s0: 0.00781*, s1: 0.00781* |"
    )
    assert lines[9] == "| old | 2 | 0.5000 ± 0.1414 | 0.4000 ± 0.1414 | +0.0000 | +0.0000 [-0.1000, +0.1000] | n/a |"
    csv = pd.read_csv(tmp_path / "results.csv")
    assert list(csv.columns) == ["ablation", "arm", "seed", "test/acc", "test/f1"]
    assert csv[["arm", "seed"]].values.tolist() == [
        ["base", 0],
        ["base", 1],
        ["mean", 0],
        ["mean", 1],
        ["old", 0],
        ["old", 1],
    ]
    assert csv["test/f1"].tolist() == [0.4, 0.45, 0.9, 0.85, 0.5, 0.3] and set(csv["ablation"]) == {"toy"}
