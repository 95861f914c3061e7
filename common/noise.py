"""Integer noise that survives secure aggregation: the Skellam distribution.

``Sk(mu) = Poisson(mu) - Poisson(mu)`` is symmetric, integer-valued, has variance
``2 * mu``, and is closed under summation: ``Sk(mu_1) + Sk(mu_2) ~ Sk(mu_1 + mu_2)``.
That last property is why fedsynth uses it for distributed noise (Agarwal, Kairouz & Liu,
"The Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021): when
each of ``s`` clients adds ``Sk(mu_share)`` to its integer vector, the sum that SecAgg+
reveals carries exactly ``Sk(s * mu_share)``, a distribution the accountant can analyse.
"""

from __future__ import annotations

import math

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


#: Per-coordinate probability that a noise share exceeds :func:`skellam_tail_bound`.
TAIL_PROBABILITY = 2.0**-100


def skellam_tail_bound(mu: float) -> int:
    """The least integer ``b`` with ``P(|Sk(mu)| > b) <= TAIL_PROBABILITY``, by a Chernoff bound.

    ``E[exp(l * Sk(mu))] = exp(2 mu (cosh l - 1))``, so ``P(Sk(mu) >= b) <= exp(-I(b))`` with
    ``I(b) = b asinh(b / 2mu) - 2mu (sqrt(1 + (b / 2mu)^2) - 1)`` (the optimal ``l``); both tails
    together are at most ``2 exp(-I(b + 1))`` for ``|Sk| > b``. Skellam tails are heavier than
    Gaussian ones far out, so a fixed number of standard deviations would not give this bound.
    """
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    if mu == 0:
        return 0
    target = math.log(2.0 / TAIL_PROBABILITY)
    low, high = 0, 1
    while _chernoff_exponent(mu, high + 1) < target:
        low, high = high, 2 * high
    while low < high:  # the least b whose exponent at b + 1 reaches the target (it grows with b)
        mid = (low + high) // 2
        low, high = (mid + 1, high) if _chernoff_exponent(mu, mid + 1) < target else (low, mid)
    return high


def skellam_upper_bound(mu: float, probability: float) -> int:
    """The least integer ``b`` with ``P(Sk(mu) >= b) <= probability`` by the Chernoff bound above."""
    if mu <= 0:
        return 1
    target = math.log(1.0 / probability)
    low, high = 0, 1
    while _chernoff_exponent(mu, high) < target:
        low, high = high, 2 * high
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if _chernoff_exponent(mu, mid) < target else (low, mid)
    return high


def _chernoff_exponent(mu: float, b: float) -> float:
    r = b / (2.0 * mu)
    return b * math.asinh(r) - 2.0 * mu * (math.sqrt(1.0 + r * r) - 1.0)
