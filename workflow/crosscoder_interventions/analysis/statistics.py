"""Uncertainty of the two quantities every comparison rests on: a rate over prompts (Wilson score
interval) and a mean paired difference over the same prompts (bootstrap over prompts)."""

from __future__ import annotations

import math

import numpy as np

# Two-sided 95%.
Z_95 = 1.959963984540054
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: unlike mean ± SEM it stays inside [0, 1]
    and is not empty at 0/n or n/n, the usual rates here. NaN where there are no trials."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate_interval(rate: float, n: int) -> tuple[float, float]:
    """The Wilson interval of a rate measured over `n` prompts (its count is rate * n)."""
    if not math.isfinite(rate):
        return (math.nan, math.nan)
    return wilson_interval(round(rate * n), n)


def paired_bootstrap(differences: np.ndarray, n_resamples: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """The mean of per-prompt differences and its 95% percentile bootstrap interval: prompts are
    resampled with replacement, each keeping both of its scores, so the variation between prompts
    (some prompts are hard for every method) cancels. A fixed seed makes the interval reproducible."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(n_resamples, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(differences.mean()), float(low), float(high))
