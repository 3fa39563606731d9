"""Paired statistics for ablation tables: is an arm's difference from the baseline more than seed noise?

Two views, both paired (the same seed, or the same test example, on both sides):

* **Δ over seeds**: seed s of an arm is paired with seed s of the baseline (same data order and
  initialisation draw). The table gives the mean of the per-seed differences and a 95 % percentile
  bootstrap CI over them (``scipy.stats.bootstrap``). Be honest about what this is at n = 3 seeds:
  a resample of 3 values has only 10 distinct means, so the CI is roughly the range of the three
  differences and excludes 0 only when all three agree in sign. It is a coarse screen, not a test
  with a calibrated 5 % error; with 1 seed there is no CI at all.
* **McNemar, per example**: for one seed pair, the test examples that exactly one of the two runs got
  right (b: only the baseline, c: only the arm). Exact two-sided binomial test of b vs c (McNemar
  1947; Dietterich 1998 recommends it for comparing two classifiers on one test set). It needs both
  runs' saved test predictions (``test_predictions.npz``); runs without them show "n/a".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


@dataclass
class DeltaCI:
    mean: float
    low: float | None  # None: fewer than 2 paired seeds
    high: float | None
    n: int

    @property
    def significant(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.4f} (n={self.n}, no CI)"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]" + ("*" if self.significant else "")


def paired_delta_ci(arm: dict[int, float], base: dict[int, float], confidence: float = 0.95) -> DeltaCI | None:
    """Mean of ``arm[s] - base[s]`` over the seeds both have, with a percentile bootstrap CI."""
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        return None
    deltas = np.array([arm[s] - base[s] for s in seeds], dtype=float)
    if len(deltas) < 2:
        return DeltaCI(float(deltas.mean()), None, None, 1)
    if np.ptp(deltas) == 0:  # every seed moved by the same amount: the bootstrap has nothing to resample
        return DeltaCI(float(deltas[0]), float(deltas[0]), float(deltas[0]), len(deltas))
    from scipy.stats import bootstrap

    ci = bootstrap(
        (deltas,),
        np.mean,
        confidence_level=confidence,
        n_resamples=9999,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    return DeltaCI(float(deltas.mean()), float(ci.low), float(ci.high), len(deltas))


@dataclass
class McNemar:
    only_base: int  # b: examples only the baseline run got right
    only_arm: int  # c: examples only the arm's run got right
    p: float

    def __str__(self) -> str:
        return f"{self.p:.3g}" + ("*" if self.p < ALPHA else "")


def mcnemar(base: dict[str, np.ndarray] | None, arm: dict[str, np.ndarray] | None) -> McNemar | None:
    """Exact McNemar test between two runs' saved test predictions; None when either is missing or
    they were tested on different examples."""
    if base is None or arm is None:
        return None
    if not (np.array_equal(base["idx"], arm["idx"]) and np.array_equal(base["labels"], arm["labels"])):
        return None
    right_base, right_arm = base["preds"] == base["labels"], arm["preds"] == arm["labels"]
    b, c = int((right_base & ~right_arm).sum()), int((~right_base & right_arm).sum())
    if b + c == 0:
        return McNemar(b, c, 1.0)
    from scipy.stats import binomtest

    return McNemar(b, c, float(binomtest(min(b, c), b + c, 0.5).pvalue))


def paired_cells(runs: dict, base: str, metric: str, predictions) -> dict[str, tuple[str, str]]:
    """Per arm, the two table cells against ``base``: Δ ``metric`` with its CI, and McNemar p per seed.

    ``runs[arm][seed]`` holds one run's test metrics (seeds as strings, as ``results.json`` keeps them);
    ``predictions(arm, seed)`` gives that run's saved test predictions or None.
    """
    base_runs = runs.get(base, {})
    base_values = {int(s): m[metric] for s, m in base_runs.items() if m and metric in m}
    cells = {}
    for arm, per_seed in runs.items():
        if arm == base:
            cells[arm] = ("—", "—")
            continue
        values = {int(s): m[metric] for s, m in per_seed.items() if m and metric in m}
        ci = paired_delta_ci(values, base_values)
        seeds = sorted(set(values) & set(base_values))
        tests = [mcnemar(predictions(base, s), predictions(arm, s)) for s in seeds]
        mc = ", ".join(f"s{s}: {t}" if t else f"s{s}: n/a" for s, t in zip(seeds, tests))
        cells[arm] = (str(ci) if ci else "—", mc if any(tests) else "n/a")
    return cells
