"""Statistical checks of integer noise shared by the noise tests (fixed seeds, tight bounds)."""

import numpy as np
from scipy import stats


def randomized_pit(x: np.ndarray, dist, seed: int = 0) -> np.ndarray:
    """F(x-1) + V * P(X = x), V ~ U(0,1): exactly uniform when x ~ dist (discrete)."""
    v = np.random.default_rng(seed).random(x.size)
    return dist.cdf(x - 1) + v * dist.pmf(x)


def matches_skellam(noise: np.ndarray, mu: float) -> bool:
    """Mean and variance within 4 standard errors of Sk(mu), and a KS fit with p > 1e-3."""
    n, var = noise.size, 2 * mu
    mean_ok = abs(noise.mean()) < 4 * np.sqrt(var / n)
    # Var of the sample variance ~ (mu4 - var^2)/n with mu4 = 3 var^2 + var for Skellam.
    var_ok = abs(noise.var() - var) < 4 * np.sqrt((2 * var**2 + var) / n)
    ks_ok = stats.kstest(randomized_pit(noise, stats.skellam(mu, mu)), "uniform").pvalue > 1e-3
    return bool(mean_ok and var_ok and ks_ok)
