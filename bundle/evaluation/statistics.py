"""Statistics for the evaluation report (SPEC 5): bootstrap intervals, paired tests, seed spread."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    statistic: Callable[..., np.ndarray] = np.mean,
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) bootstrap confidence interval (``scipy.stats.bootstrap``).

    BCa rather than the plain percentile interval: the report's statistics include skewed ones (the
    median and 90th percentile of absolute NT differences), whose percentile intervals are biased.
    Where BCa is undefined (a statistic whose resamples barely vary) the percentile interval is used.

    Args:
        values: one value per image.
        confidence: coverage of the interval.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling (the interval is reproducible).
        statistic: ``statistic(sample, axis)`` (``np.mean``, ``np.median``, ...).

    Returns:
        (low, high); both equal the value when all values are equal (a single observation included).

    Raises:
        ValueError: for no values.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if np.all(data == data[0]):  # no spread: BCa is undefined, the interval is the value
        value = float(statistic(data[None], axis=1)[0])
        return value, value
    low, high = np.nan, np.nan
    for method in ("BCa", "percentile"):  # BCa is undefined when the resampled statistic barely varies
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            result = stats.bootstrap(
                (data,), statistic, confidence_level=confidence, n_resamples=n_resamples, method=method, rng=seed
            )
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            break
    return float(low), float(high)


def paired_comparison(
    before: Mapping[str, float], after: Mapping[str, float], confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Compare two conditions on the same images (e.g. phase 2 vs phase 1).

    Args:
        before: value per image id under the reference condition.
        after: value per image id under the new condition; only ids present in both are paired.
        confidence: coverage of the bootstrap interval of the mean difference.
        seed: bootstrap seed.

    Returns:
        ``n``, ``mean_before``, ``mean_after``, ``mean_difference`` (after - before), its CI
        (``ci_low``, ``ci_high``), ``relative_pct`` (100 x difference / |mean_before|) and the
        two-sided Wilcoxon signed-rank ``p_value`` (1.0 when all differences are zero).

    Raises:
        ValueError: when no image is in both.
    """
    ids = sorted(set(before) & set(after))
    if not ids:
        raise ValueError("paired_comparison: no image id is present in both conditions")
    a = np.array([before[i] for i in ids], dtype=np.float64)
    b = np.array([after[i] for i in ids], dtype=np.float64)
    difference = b - a
    low, high = bootstrap_ci(difference, confidence, seed=seed)
    if np.allclose(difference, 0):
        p_value = 1.0
    else:
        p_value = float(stats.wilcoxon(b, a, zero_method="wilcox", alternative="two-sided").pvalue)
    return {
        "n": len(ids),
        "mean_before": float(a.mean()),
        "mean_after": float(b.mean()),
        "mean_difference": float(difference.mean()),
        "ci_low": low,
        "ci_high": high,
        "relative_pct": float(100 * difference.mean() / abs(a.mean())) if a.mean() != 0 else float("nan"),
        "p_value": p_value,
    }


def seed_spread(values: Sequence[float]) -> dict[str, float]:
    """Spread of one summary value across seeds: mean, sample standard deviation, min, max, n."""
    data = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(data.mean()),
        "std": float(data.std(ddof=1)) if data.size > 1 else 0.0,
        "min": float(data.min()),
        "max": float(data.max()),
        "n": int(data.size),
    }
