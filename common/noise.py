"""Integer noise that survives secure aggregation: the Skellam distribution.

``Sk(mu) = Poisson(mu) - Poisson(mu)`` is symmetric, integer-valued, has variance
``2 * mu``, and is closed under summation: ``Sk(mu_1) + Sk(mu_2) ~ Sk(mu_1 + mu_2)``.
That last property is why fedsynth uses it for distributed noise (Agarwal, Kairouz & Liu,
"The Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021): when
each of ``s`` clients adds ``Sk(mu_share)`` to its integer vector, the sum that SecAgg+
reveals carries exactly ``Sk(s * mu_share)``, a distribution the accountant can analyse.
"""

from __future__ import annotations

import numpy as np


def skellam_mu_for_sigma(sigma: float) -> float:
    """Skellam parameter whose variance ``2 * mu`` equals ``sigma**2``."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return sigma * sigma / 2.0


def share_of_mu(mu_total: float, min_survivors: int) -> float:
    """Noise each client adds so that any ``min_survivors`` of them carry ``mu_total``.

    With ``s >= min_survivors`` survivors the sum carries ``s * share >= mu_total``.
    """
    if min_survivors < 1:
        raise ValueError(f"min_survivors must be >= 1, got {min_survivors}")
    return mu_total / min_survivors


def sample_skellam(rng: np.random.Generator, mu: float, size: int) -> np.ndarray:
    """Draw ``size`` independent ``Sk(mu)`` values as int64 (all zero when ``mu == 0``)."""
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    if mu == 0:
        return np.zeros(size, dtype=np.int64)
    return rng.poisson(mu, size).astype(np.int64) - rng.poisson(mu, size).astype(np.int64)


def skellam_tail_bound(mu: float, z: float = 12.0) -> int:
    """An integer ``b`` with ``P(|Sk(mu)| > b)`` negligible (``z`` standard deviations plus 8).

    Skellam tails are lighter than Gaussian ones at the same variance for small ``mu`` and
    approach them for large ``mu``; ``z = 12`` puts the per-coordinate overflow chance far
    below 1e-30. The constant 8 covers tiny ``mu`` where the standard deviation is < 1.
    """
    return int(np.ceil(z * np.sqrt(2.0 * mu))) + 8
