"""Privacy of the Skellam mechanism: its RDP bound and its exact PLD.

Noise Sk(mu, mu) = Poisson(mu) - Poisson(mu) per coordinate, variance 2 * mu (see
``events.SkellamDpEvent``). Reference: N. Agarwal, P. Kairouz, Z. Liu, "The Skellam
Mechanism for Differentially Private Federated Learning", NeurIPS 2021
(arXiv:2110.04995), RDP bound of the multi-dimensional Skellam mechanism (Theorem
3.5 there, proven for integer orders). The paper writes it in terms of the variance
mu_p = 2 * mu:

    eps(alpha) <= alpha d2^2 / (2 mu_p) + min(((2 alpha - 1) d2^2 + 6 d1) / (4 mu_p^2), 3 d1 / (2 mu_p))

that is, in our mu,

    eps(alpha) <= alpha d2^2 / (4 mu) + min(((2 alpha - 1) d2^2 + 6 d1) / (16 mu^2), 3 d1 / (4 mu)).

The same expression (with mu_p the variance) is in the authors' code,
google-research/federated, distributed_dp/accounting_utils.py, ``_skellam_rdp``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from scipy import optimize, stats

DEFAULT_TAIL_MASS = 1e-20


def skellam_rdp(mu: float, l1_sensitivity: float, l2_sensitivity: float, orders: np.ndarray) -> np.ndarray:
    """RDP of one Skellam release at each order (the bound above).

    The bound is stated for integer orders; a fractional order alpha gets the bound
    at ceil(alpha), which is valid because Renyi divergence is non-decreasing in its
    order (van Erven & Harremoes 2014).
    """
    alpha = np.ceil(np.asarray(orders, dtype=float))
    d1, d2sq = float(l1_sensitivity), float(l2_sensitivity) ** 2
    surcharge = np.minimum(((2 * alpha - 1) * d2sq + 6 * d1) / (16 * mu**2), 3 * d1 / (4 * mu))
    return alpha * d2sq / (4 * mu) + surcharge


@functools.lru_cache(maxsize=256)
def skellam_pld(
    mu: float, value_discretization_interval: float, tail_mass: float = DEFAULT_TAIL_MASS
) -> pld_lib.PrivacyLossDistribution:
    """PLD of one Skellam release of a count vector (d1 = d2 = 1), exact up to a tail.

    Adding or removing one record changes exactly one coordinate by 1; the other
    coordinates have identical distributions on both datasets, so the privacy loss is
    that of Sk(mu, mu) against Sk(mu, mu) shifted by one. The pair is symmetric (the
    map k -> 1 - k swaps the two directions), so one PLD serves add and remove.

    The pmf (scipy.stats.skellam) is taken on [-K, K], with K chosen so that the
    Chernoff bound on the mass outside, 2 exp(2 mu (cosh t - 1) - t (K + 1)) with
    sinh t = (K + 1) / (2 mu), is at most ``tail_mass``; that bound is put at privacy
    loss +infinity (pessimistic: it adds at most ``tail_mass`` to delta).

    Remembered per process (a pure function of its arguments; the accountants only compose the
    distribution into new ones): every guard of a simulation and every ledger read composes the
    same few rounds.
    """
    k_max = _tail_cut(mu, tail_mass)
    support = np.arange(-k_max - 1, k_max + 1)
    log_pmf = stats.skellam.logpmf(support, mu, mu)
    outcomes = support[1:].tolist()
    upper: dict[object, float] = dict(zip(outcomes, log_pmf[1:].tolist()))
    lower: dict[object, float] = dict(zip(outcomes, log_pmf[:-1].tolist()))
    upper["tail"] = math.log(2.0) + _log_tail_bound(mu, k_max + 1)
    return pld_lib.from_two_probability_mass_functions(
        lower, upper, value_discretization_interval=value_discretization_interval, symmetric=True
    )


def _log_tail_bound(mu: float, k: float) -> float:
    """Chernoff bound on log P[Sk(mu, mu) >= k] for k >= 0 (E e^{tX} = exp(2 mu (cosh t - 1)))."""
    t = math.asinh(k / (2 * mu))
    return 2 * mu * (math.cosh(t) - 1) - t * k


def _tail_cut(mu: float, tail_mass: float) -> int:
    target = math.log(tail_mass / 2)
    high = 1.0
    while _log_tail_bound(mu, high) > target:
        high *= 2
    root = optimize.brentq(lambda k: _log_tail_bound(mu, k) - target, 0.0, high)
    return math.ceil(root)
