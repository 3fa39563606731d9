"""Paired statistics for ablation tables: is an arm's difference from the baseline more than seed noise?

* **Interval** (``paired_interval``): a paired t-interval over the per-seed differences (seed s of an arm
  minus seed s of the baseline: same data order and head initialisation). With nested seeds (rows:
  pre-training seeds, columns: the fine-tune seeds under each) the pre-training run is the unit: the
  differences are averaged within each row and the t-interval is taken over the row means, so pre-training
  variance is in the interval. Its coverage is tested by simulation (``tests/bertlab/test_stats.py``). A
  percentile bootstrap is not used: at 3 seeds it returns [min, max] of the differences, ~75 % coverage.
* **Several arms in one table**: Holm-adjusted p-values, and intervals at the level Holm tests each arm
  at. The verdict word is "gain" or "loss" only when the Holm p is below α (that adjusted interval then
  excludes 0), "no detectable difference (± adjusted half-width)" otherwise, and "too few seeds" below
  ``MIN_UNITS`` units, whatever the interval says.
* **McNemar, per example** (McNemar 1947; Dietterich 1998): per seed pair, an exact binomial test on the test
  examples exactly one of the two runs got right; ``pooled_mcnemar`` pools the seeds as a
  Cochran–Mantel–Haenszel test over seed strata. Every seed is scored on the same test examples, so the
  strata are not independent and the pooled p is optimistic; it is a per-example screen, not the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sp

ALPHA = 0.05
MIN_UNITS = 5
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None  # None: fewer than 2 units
    high: float | None
    units: int  # seeds, or pre-training seeds for nested differences
    sd: float | None  # standard deviation of the units' differences
    p: float | None  # two-sided p of the paired t-test against 0
    confidence: float = 1 - ALPHA

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.4f} (n={self.units}, no interval)"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_interval(differences, confidence: float = 1 - ALPHA) -> Interval:
    """Mean paired difference with its t-interval. ``differences``: 1-D (one per seed) or 2-D nested (rows =
    pre-training seeds, columns = fine-tune seeds; NaN where a run is missing), in which case each row is
    averaged first and the rows are the units."""
    d = np.asarray(differences, dtype=float)
    if d.ndim == 2:
        d = np.array([np.nanmean(row) for row in d if np.isfinite(row).any()])
    elif d.ndim != 1:
        raise ValueError(f"differences must be 1-D or 2-D, got shape {d.shape}")
    d = d[np.isfinite(d)]
    if len(d) == 0:
        raise ValueError("no differences")
    mean = float(d.mean())
    if len(d) < 2:
        return Interval(mean, None, None, len(d), None, None, confidence)
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(len(d))
    half = float(sp.t.ppf(0.5 + confidence / 2, len(d) - 1) * se)
    p = 1.0 if se == 0 and mean == 0 else (0.0 if se == 0 else float(2 * sp.t.sf(abs(mean) / se, len(d) - 1)))
    return Interval(mean, mean - half, mean + half, len(d), sd, p, confidence)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (family-wise error ≤ α over a table's arms); None stays None."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def detectable_effect(sd: float | None, units: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference a paired t-test on ``units`` units with this spread detects with
    probability ``power`` at two-sided ``alpha``: (t_{1−α/2} + t_{power}) · sd / √n, both on n − 1 df."""
    if sd is None or units < 2:
        return None
    df = units - 1
    return float((sp.t.ppf(1 - alpha / 2, df) + sp.t.ppf(power, df)) * sd / np.sqrt(units))


def verdict(adjusted: Interval, holm_p: float | None, alpha: float = ALPHA) -> str:
    """The verdict word, from the numbers alone: gain or loss when the Holm-adjusted p is below α (its
    adjusted interval then excludes 0), else no detectable difference, with the adjusted half-width."""
    if adjusted.units < MIN_UNITS:
        return f"too few seeds ({adjusted.units} unit{'s' * (adjusted.units != 1)}; {MIN_UNITS} needed)"
    if holm_p is not None and holm_p < alpha and adjusted.excludes_zero:
        return "gain" if adjusted.mean > 0 else "loss"
    return f"no detectable difference (± {adjusted.half_width:.4f})"


@dataclass(frozen=True)
class Comparison:
    """One arm against its baseline: the 95 % interval, the Holm-adjusted p and interval, and the verdict."""

    interval: Interval
    adjusted: Interval
    holm_p: float | None
    detectable: float | None

    @property
    def verdict(self) -> str:
        return verdict(self.adjusted, self.holm_p)


def compare_arms(differences: dict[str, object], alpha: float = ALPHA) -> dict[str, Comparison]:
    """Every arm's differences from its baseline, adjusted together as one family of m comparisons (Holm).
    The arm with the r-th smallest p (r = 0, 1, ...) gets its adjusted interval at confidence 1 − α/(m − r),
    the level Holm's step-down tests it at, so a gain or loss always has an adjusted interval excluding 0."""
    names = list(differences)
    plain = {a: paired_interval(differences[a], 1 - alpha) for a in names}
    ps = holm([plain[a].p for a in names])
    ranked = sorted((a for a in names if plain[a].p is not None), key=lambda a: plain[a].p)
    level = {a: 1 - alpha / (len(ranked) - r) for r, a in enumerate(ranked)}
    return {
        a: Comparison(
            plain[a],
            paired_interval(differences[a], level.get(a, 1 - alpha)),
            p,
            detectable_effect(plain[a].sd, plain[a].units, alpha),
        )
        for a, p in zip(names, ps)
    }


@dataclass(frozen=True)
class McNemar:
    only_base: int  # b: examples only the baseline run got right
    only_arm: int  # c: examples only the arm's run got right
    p: float

    def __str__(self) -> str:
        return f"{self.p:.3g}"


def mcnemar(base: dict[str, np.ndarray] | None, arm: dict[str, np.ndarray] | None) -> McNemar | None:
    """Exact McNemar test between two runs' saved test predictions; None when either is missing or
    they were tested on different examples."""
    if base is None or arm is None:
        return None
    if not (np.array_equal(base["idx"], arm["idx"]) and np.array_equal(base["labels"], arm["labels"])):
        return None
    right_base, right_arm = base["preds"] == base["labels"], arm["preds"] == arm["labels"]
    return exact_mcnemar(int((right_base & ~right_arm).sum()), int((~right_base & right_arm).sum()))


def exact_mcnemar(b: int, c: int) -> McNemar:
    """McNemar's exact test from the discordant counts: two-sided binomial of b against b + c at 1/2."""
    return McNemar(b, c, 1.0 if b + c == 0 else float(sp.binomtest(min(b, c), b + c, 0.5).pvalue))


def pooled_mcnemar(tests: list[McNemar | None]) -> McNemar | None:
    """Cochran–Mantel–Haenszel over seed strata of paired predictions: (Σb − Σc)² / Σ(b + c), χ² on 1 df
    (for matched pairs, the stratified McNemar statistic)."""
    known = [t for t in tests if t is not None]
    if not known:
        return None
    b, c = sum(t.only_base for t in known), sum(t.only_arm for t in known)
    if b + c == 0:
        return McNemar(b, c, 1.0)
    return McNemar(b, c, float(sp.chi2.sf((b - c) ** 2 / (b + c), 1)))
