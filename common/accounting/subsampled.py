"""RDP of any mechanism under Poisson subsampling: Zhu & Wang's general upper bound.

Mechanism: every record enters the batch independently with probability ``q``; the base
mechanism ``M`` then runs on the batch. Under add/remove neighbours the subsampled
mechanism compares ``M(B)`` with ``(1 - q) M(B) + q M(B + x)``. dp-accounting computes this
exactly only when ``M`` is Gaussian; fedsynth's distributed DP-SGD adds Skellam noise, so
its steps are accounted with the bound that holds for every base mechanism:

Y. Zhu, Y.-X. Wang, "Poisson Subsampled Renyi Differential Privacy", ICML 2019: their general
upper bound (Theorem 5 of the PMLR version; the one with the factor 3).
For an integer order alpha >= 2 and a base mechanism with RDP ``eps(l)`` at every integer
order ``l`` (in both directions of the neighbouring pair),

    eps_q(alpha) <= 1 / (alpha - 1) * log( (1 - q)^(alpha - 1) (alpha q - q + 1)
                   + C(alpha, 2) q^2 (1 - q)^(alpha - 2) exp(eps(2))
                   + 3 sum_{l=3}^{alpha} C(alpha, l) (1 - q)^(alpha - l) q^l exp((l - 1) eps(l)) ).

Two further facts make the bound usable at every order an accountant asks for:
* subsampling never hurts: ``eps_q(alpha) <= eps(alpha)`` (joint quasi-convexity of the
  Renyi divergence), so the smaller of the two is reported;
* a fractional order gets the bound at ``ceil(alpha)``, valid because the Renyi divergence
  is non-decreasing in its order (van Erven & Harremoes 2014).
Without the factor 3 the sum is Mironov et al.'s exact expression for the subsampled
Gaussian: the tests check the bound against dp-accounting's exact values from above.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import gammaln, logsumexp

#: ``base_rdp(integer_orders) -> rdp``: the base mechanism's RDP at integer orders >= 2.
BaseRdp = Callable[[np.ndarray], np.ndarray]


def poisson_subsampled_rdp(base_rdp: BaseRdp, sampling_rate: float, orders: np.ndarray) -> np.ndarray:
    """Upper bound on the RDP of ``base_rdp``'s mechanism Poisson-subsampled at ``sampling_rate``."""
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    integer = np.maximum(np.ceil(np.asarray(orders, dtype=float)), 2.0)
    base = np.asarray(base_rdp(integer), dtype=float)
    if sampling_rate == 1:
        return base
    by_order = {a: _theorem6(base_rdp, sampling_rate, int(a)) for a in np.unique(integer)}
    bound = np.array([by_order[a] for a in integer])
    return np.minimum(bound, base)


def _theorem6(base_rdp: BaseRdp, q: float, alpha: int) -> float:
    ells = np.arange(2, alpha + 1, dtype=float)
    eps = np.asarray(base_rdp(ells), dtype=float)
    if not np.all(np.isfinite(eps)):
        return float("inf")
    log_q, log_1mq = np.log(q), np.log1p(-q)
    log_binom = gammaln(alpha + 1) - gammaln(ells + 1) - gammaln(alpha - ells + 1)
    terms = log_binom + (alpha - ells) * log_1mq + ells * log_q + (ells - 1) * eps
    terms[1:] += np.log(3.0)  # l >= 3
    head = (alpha - 1) * log_1mq + np.log1p((alpha - 1) * q)
    return float(logsumexp(np.concatenate([[head], terms])) / (alpha - 1))
