"""Paired statistics of ablation tables: t-intervals whose 95 % is tested by simulation (flat and nested seeds),
Holm, exact and pooled McNemar, the verdict words, and the table and ``results.csv`` they go into."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from bertlab.ablation_report import differences, write_report
from bertlab.ablation_spec import Ablation
from bertlab.stats import (
    compare_arms,
    detectable_effect,
    exact_mcnemar,
    holm,
    mcnemar,
    paired_interval,
    pooled_mcnemar,
    verdict,
)

TABLES = 2000  # 95 % ± 1.0 % is about two standard errors of a coverage estimated from 2,000 tables


def _coverage(rng, make, effect: float) -> tuple[float, float]:
    """Share of simulated tables whose 95 % interval covers ``effect``, and share that exclude 0."""
    covered = excluded = 0
    for _ in range(TABLES):
        ci = paired_interval(make(rng))
        covered += ci.low <= effect <= ci.high
        excluded += ci.excludes_zero
    return covered / TABLES, excluded / TABLES


@pytest.mark.parametrize("n", [3, 5, 10])
def test_flat_interval_covers_95_percent_and_excludes_zero_5_percent_under_the_null(n):
    rng = np.random.default_rng(n)
    coverage, _ = _coverage(rng, lambda r: 0.01 + r.normal(0, 0.006, n), 0.01)
    assert 0.93 <= coverage <= 0.97
    _, false_alarms = _coverage(rng, lambda r: r.normal(0, 0.006, n), 0.0)
    assert 0.03 <= false_alarms <= 0.07


def test_nested_interval_counts_pre_training_runs_as_units():
    """3 pre-training seeds x 3 fine-tune seeds, pre-training noise (sd 0.01) larger than fine-tune noise (0.004):
    averaging within a pre-training run and taking t over the runs keeps 95 %; treating the 9 runs as units
    does not."""
    rng = np.random.default_rng(7)

    def table(r, effect=0.02):
        return effect + r.normal(0, 0.01, (3, 1)) + r.normal(0, 0.004, (3, 3))

    coverage, _ = _coverage(rng, table, 0.02)
    assert 0.93 <= coverage <= 0.97
    _, false_alarms = _coverage(rng, lambda r: table(r, 0.0), 0.0)
    assert 0.03 <= false_alarms <= 0.07
    naive = np.mean(
        [(lambda ci: ci.low <= 0.02 <= ci.high)(paired_interval(table(rng).ravel())) for _ in range(TABLES)]
    )
    assert naive < 0.85  # the 9 runs as units: far below 95 %


def test_the_old_percentile_bootstrap_at_three_seeds_is_what_the_t_interval_replaces():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(400):
        d = 0.01 + rng.normal(0, 0.006, 3)
        means = rng.choice(d, (2000, 3)).mean(1)
        covered += np.quantile(means, 0.025) <= 0.01 <= np.quantile(means, 0.975)
    assert covered / 400 < 0.85  # ~75 %: why bertlab.stats no longer bootstraps


def test_interval_numbers_by_hand():
    ci = paired_interval([0.1, 0.05, 0.0])  # mean 0.05, sd 0.05, se 0.05/sqrt(3), t(0.975, 2) = 4.303
    half = 4.302652729911275 * 0.05 / np.sqrt(3)
    assert ci.mean == pytest.approx(0.05) and ci.units == 3 and ci.sd == pytest.approx(0.05)
    assert (ci.low, ci.high) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    assert ci.p == pytest.approx(2 * sp.t.sf(0.05 / (0.05 / np.sqrt(3)), 2))
    nested = paired_interval([[0.1, 0.0], [0.2, np.nan], [0.0, 0.1]])  # row means 0.05, 0.2, 0.05
    assert nested.units == 3 and nested.mean == pytest.approx(0.1)
    assert nested.sd == pytest.approx(np.std([0.05, 0.2, 0.05], ddof=1))
    one = paired_interval([0.3])
    assert one.units == 1 and one.low is None and str(one) == "+0.3000 (n=1, no interval)"
    same = paired_interval([0.01, 0.01, 0.01])
    assert (same.low, same.high, same.p) == (pytest.approx(0.01), pytest.approx(0.01), 0.0)


def test_holm_steps_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03, None]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_verdict_words_follow_the_adjusted_numbers():
    rng = np.random.default_rng(0)
    arms = {
        "big": 0.03 + rng.normal(0, 0.003, 5),
        "none": rng.normal(0, 0.003, 5),
        "worse": -0.02 + rng.normal(0, 0.003, 5),
        "few": 0.05 + rng.normal(0, 0.001, 3),
    }
    got = compare_arms(arms)
    assert got["big"].verdict == "gain" and got["worse"].verdict == "loss"
    assert got["none"].verdict.startswith("no detectable difference (± ")
    assert got["few"].verdict == "too few seeds (3 units; 5 needed)"  # however clear the interval
    for c in got.values():  # a gain or loss always comes with an adjusted interval that excludes 0
        assert c.adjusted.confidence >= c.interval.confidence
        if c.verdict in ("gain", "loss"):
            assert c.adjusted.excludes_zero and c.holm_p < 0.05
    worst = max(got, key=lambda a: got[a].interval.p)
    assert got[worst].adjusted.confidence == pytest.approx(0.95)  # Holm tests the last arm at α
    borderline = paired_interval([0.01, 0.011, 0.009, 0.0105, 0.0095], 0.99)
    assert verdict(borderline, holm_p=0.2).startswith("no detectable")


def test_detectable_effect_is_the_80_percent_power_difference():
    d = detectable_effect(0.01, 5)
    assert d == pytest.approx((sp.t.ppf(0.975, 4) + sp.t.ppf(0.8, 4)) * 0.01 / np.sqrt(5))
    rng, hits = np.random.default_rng(1), 0
    for _ in range(TABLES):  # with the true effect at the detectable size, the test rejects ~80 % (t approximation)
        hits += paired_interval(d + rng.normal(0, 0.01, 5)).excludes_zero
    assert 0.70 <= hits / TABLES <= 0.85
    assert detectable_effect(None, 5) is None and detectable_effect(0.01, 1) is None


def _preds(right: np.ndarray) -> dict:
    labels = np.arange(len(right)) % 2
    return {"idx": np.arange(len(right)), "labels": labels, "preds": np.where(right, labels, 1 - labels)}


def test_mcnemar_counts_discordant_examples_and_pools_seeds():
    base = np.array([True] * 10 + [False] * 10)
    arm = np.array([True] * 10 + [True] * 8 + [False] * 2)  # b = 0, c = 8
    result = mcnemar(_preds(base), _preds(arm))
    assert (result.only_base, result.only_arm) == (0, 8)
    assert result.p == pytest.approx(2 * 0.5**8) and str(result) == "0.00781"
    assert mcnemar(_preds(base), _preds(base)).p == 1.0
    other = _preds(arm)
    other["idx"] = other["idx"] + 1  # another test set: no pairing
    assert mcnemar(_preds(base), other) is None and mcnemar(None, _preds(arm)) is None
    pooled = pooled_mcnemar([exact_mcnemar(3, 7), exact_mcnemar(2, 6), None])  # Σb = 5, Σc = 13
    assert (pooled.only_base, pooled.only_arm) == (5, 13)
    assert pooled.p == pytest.approx(sp.chi2.sf(64 / 18, 1))
    assert pooled_mcnemar([None]) is None and pooled_mcnemar([exact_mcnemar(0, 0)]).p == 1.0


def test_differences_nest_by_pre_training_seed_when_there_are_several():
    base = {str(s): {"test/acc": 0.80} for s in range(6)}
    arm = {str(s): {"test/acc": 0.80 + 0.01 * s, "pretrain_seed": s // 3} for s in range(6)}
    nested = differences(arm, base, "test/acc")
    assert nested.shape == (2, 3) and nested[1].tolist() == pytest.approx([0.03, 0.04, 0.05])
    flat = differences({s: {"test/acc": r["test/acc"]} for s, r in arm.items()}, base, "test/acc")
    assert flat.shape == (6,)
    assert differences({"9": {"test/acc": 0.5}}, base, "test/acc") is None


def _finished_run(root, arm, seed, right=None):
    run = os.path.join(root, arm, f"seed{seed}", "run")
    os.makedirs(run)
    with open(os.path.join(root, arm, f"seed{seed}", "summary.json"), "w") as f:
        json.dump({"stages": [{"name": "run", "export": os.path.join(run, "export")}]}, f)
    if right is not None:  # runs finished before predictions were saved have none
        np.savez(os.path.join(run, "test_predictions.npz"), **_preds(right))


def test_report_pairs_seeds_and_examples_and_keeps_them_in_results_json(tmp_path):
    root = str(tmp_path)
    base_right = np.array([True] * 10 + [False] * 10)
    for seed in (0, 1):
        _finished_run(root, "base", seed, base_right)
        _finished_run(root, "mean", seed, np.array([True] * 18 + [False] * 2))
        _finished_run(root, "old", seed)
    prov = {"provenance": {"commit": "abcdef0123", "dirty": False, "code": "c1"}}
    runs = {
        "base": {"0": {"test/acc": 0.5, "test/f1": 0.4, **prov}, "1": {"test/acc": 0.5, "test/f1": 0.45, **prov}},
        "mean": {"0": {"test/acc": 0.9, "test/f1": 0.9, **prov}, "1": {"test/acc": 0.9, "test/f1": 0.85, **prov}},
        "old": {"0": {"test/acc": 0.6, "test/f1": 0.5, **prov}, "1": {"test/acc": 0.4, "test/f1": 0.3, **prov}},
    }
    results = {
        arm: {"_runs": r, **{m: [r[s][m] for s in ("0", "1")] for m in ("test/acc", "test/f1")}}
        for arm, r in runs.items()
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    spec = Ablation("toy", root, seeds=[0, 1], metrics=["test/acc", "test/f1"], baseline="base")
    lines = write_report(spec, results, "bertlab ablate toy.yaml").splitlines()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| ")}
    assert rows["arm"][4:10] == [
        "Δ test/acc [95 % CI]",
        "units",
        "Holm p",
        "verdict",
        "detectable Δ",
        "McNemar p pooled (per seed) |",
    ]  # one commit: no commit column
    assert rows["base"][4] == "baseline"
    assert rows["mean"][4] == "+0.4000 [+0.4000, +0.4000]" and rows["mean"][5] == "2"
    assert rows["mean"][7] == "too few seeds (2 units; 5 needed)"
    assert rows["mean"][9] == f"{pooled_mcnemar([exact_mcnemar(0, 8)] * 2)} (s0: 0.00781, s1: 0.00781) |"
    assert rows["old"][9] == "n/a |"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["mean"]["_mcnemar"] == {"0": [0, 8], "1": [0, 8]} and saved["_table"]["baseline"] == "base"
    csv = pd.read_csv(tmp_path / "results.csv")
    assert list(csv.columns)[:7] == ["ablation", "arm", "seed", "pretrain_seed", "commit", "dirty", "code"]
    assert set(csv["commit"]) == {"abcdef0123"} and csv["test/f1"].tolist() == [0.4, 0.45, 0.9, 0.85, 0.5, 0.3]
    results["old"]["_runs"]["1"]["provenance"] = {"commit": "1234567890", "dirty": True, "code": "c2"}
    lines = write_report(spec, results, "bertlab ablate toy.yaml").splitlines()
    assert lines[5].endswith("| commit |")  # the arms differ: each row shows its commits
    assert [line for line in lines if line.startswith("| old")][0].endswith("| 1234567+dirty, abcdef0 |")
