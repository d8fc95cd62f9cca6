"""Small statistics for the benches: Kendall's τ-b with a bootstrap interval (one τ, or the paired
difference of two τ on the same items), and means over seeds compared in standard errors.

numpy only. τ-b (ties counted as in scipy.stats.kendalltau's default) on n items is O(n²): the
benches rank tens of paths. Bootstrap: resample items with replacement (a duplicated item's
pairs are ties on both sides and drop out of τ-b), the percentile interval of `level`; resamples
where τ is undefined (a side all ties) are skipped and counted.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence

import numpy as np


def _tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """τ-b of each row pair of x, y (shape (B, n)); nan where a side has no untied pair."""
    i, j = np.triu_indices(x.shape[1], 1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    untied_x, untied_y = (dx != 0).sum(axis=1), (dy != 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((untied_x > 0) & (untied_y > 0), (dx * dy).sum(axis=1) / np.sqrt(untied_x * untied_y.astype(float)),
                        np.nan)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b of two equally long sequences (nan when fewer than 2 items or a side is all ties)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau: expected two 1-d sequences of one length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return math.nan
    return float(_tau_rows(x[None], y[None])[0])


def _bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, *, n_boot: int, level: float, seed: int) -> dict:
    """Percentile interval of `stat(indices)` (indices: (B, n) resampled item indices -> B values)."""
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, 500):  # chunks: memory O(500 n²)
        values.append(stat(rng.integers(0, n, size=(min(500, n_boot - start), n))))
    values = np.concatenate(values)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"lo": None, "hi": None, "boot": n_boot, "boot_undefined": int(n_boot)}
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return {"lo": float(lo), "hi": float(hi), "boot": n_boot, "boot_undefined": int(n_boot - len(finite))}


def tau_ci(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """{"tau", "lo", "hi", "n", "level", ...}: τ-b of (x, y) and its bootstrap percentile interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    tau = kendall_tau(x, y)
    out = {"tau": None if math.isnan(tau) else tau, "n": int(len(x)), "level": level}
    if len(x) < 3:
        return {**out, "lo": None, "hi": None, "boot": 0, "boot_undefined": 0}
    return {**out, **_bootstrap(lambda idx: _tau_rows(x[idx], y[idx]), len(x), n_boot=n_boot, level=level, seed=seed)}


def tau_difference_ci(a: Sequence[float], b: Sequence[float], y: Sequence[float], *, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> dict:
    """τ(a, y) − τ(b, y) on the same items (paired: one resample of items for both) with its interval:
    does predictor a rank y better than predictor b?"""
    a, b, y = (np.asarray(v, dtype=float) for v in (a, b, y))
    ta, tb = kendall_tau(a, y), kendall_tau(b, y)
    diff = ta - tb
    out = {"diff": None if math.isnan(diff) else diff, "n": int(len(y)), "level": level}
    if len(y) < 3:
        return {**out, "lo": None, "hi": None, "boot": 0, "boot_undefined": 0}
    return {**out, **_bootstrap(lambda idx: _tau_rows(a[idx], y[idx]) - _tau_rows(b[idx], y[idx]), len(y),
                                n_boot=n_boot, level=level, seed=seed)}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof 1; None below 2 values) of `values`."""
    values = [float(v) for v in values if v is not None]
    return {"n": len(values), "mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def compare_means(a: Sequence[float], b: Sequence[float], *, k: float = 2.0, min_n: int = 3) -> dict:
    """mean(a) − mean(b) in standard errors (Welch: sqrt(s_a²/n_a + s_b²/n_b)): "a higher" / "a lower"
    when the difference exceeds k standard errors, "within noise" otherwise; "unresolved" below
    `min_n` values on a side."""
    sa, sb = mean_std(a), mean_std(b)
    if sa["n"] < min_n or sb["n"] < min_n:
        return {"diff": None if not sa["n"] or not sb["n"] else sa["mean"] - sb["mean"], "se": None,
                "n": [sa["n"], sb["n"]], "verdict": f"unresolved ({sa['n']} and {sb['n']} of {min_n} seeds)"}
    diff = sa["mean"] - sb["mean"]
    se = math.sqrt(sa["std"] ** 2 / sa["n"] + sb["std"] ** 2 / sb["n"])
    verdict = "a higher" if diff > k * se else "a lower" if diff < -k * se else "within noise"
    return {"diff": diff, "se": se, "n": [sa["n"], sb["n"]], "k": k, "verdict": verdict}
