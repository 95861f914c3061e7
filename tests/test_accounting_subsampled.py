"""Poisson-subsampled RDP beyond the Gaussian, and the DP-SGD events of the teacher.

The general bound is checked from above against exact values: dp-accounting's subsampled
Gaussian, and a direct numerical Renyi divergence of the subsampled 1-D Skellam mechanism
in both directions of the add/remove pair. The teacher's DP-SGD events are checked against
Opacus' own RDP accountant for the Gaussian of the same variance.
"""

import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp
from opacus.accountants import RDPAccountant as OpacusRDP
from scipy import stats
from scipy.special import logsumexp

from fedsynth.common.accounting import (
    CombinedAccountant,
    RdpAccountant,
    skellam_dpsgd_event,
    skellam_event,
)
from fedsynth.common.accounting.skellam import skellam_rdp
from fedsynth.common.accounting.subsampled import poisson_subsampled_rdp

INTEGER_ORDERS = np.arange(2, 65, dtype=float)
DELTA = 1e-5


@pytest.mark.parametrize("sigma,q", [(0.8, 0.2), (1.0, 0.01), (1.5, 0.04), (4.0, 0.05)])
def test_bound_is_above_the_exact_subsampled_gaussian_and_not_far(sigma, q):
    exact = dp_rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, INTEGER_ORDERS)
    bound = poisson_subsampled_rdp(lambda a: a / (2 * sigma**2), q, INTEGER_ORDERS)
    assert np.all(bound >= exact * (1 - 1e-9))
    assert bound[0] == pytest.approx(exact[0], rel=1e-6)  # order 2: no l >= 3 terms, the bound is exact
    assert np.all(bound <= INTEGER_ORDERS / (2 * sigma**2) + 1e-12)  # never worse than no subsampling


def test_full_sampling_is_the_base_mechanism():
    base = lambda a: a / 8.0  # noqa: E731
    np.testing.assert_allclose(poisson_subsampled_rdp(base, 1.0, INTEGER_ORDERS), INTEGER_ORDERS / 8.0)


def test_fractional_orders_take_the_next_integer():
    base = lambda a: a / 8.0  # noqa: E731
    rdp = poisson_subsampled_rdp(base, 0.1, np.array([2.5, 3.0]))
    assert rdp[0] == rdp[1]


def exact_subsampled_skellam_rdp(mu: float, q: float, alpha: int) -> float:
    """max over both directions of D_alpha between Sk(mu) and (1-q) Sk(mu) + q Sk(mu, shifted by 1)."""
    reach = int(12 * np.sqrt(2 * mu)) + 30  # mass beyond is far below the divergences' precision
    k = np.arange(-reach, reach + 1)
    log_p = stats.skellam.logpmf(k, mu, mu)
    log_shift = stats.skellam.logpmf(k - 1, mu, mu)
    log_mix = np.logaddexp(np.log1p(-q) + log_p, np.log(q) + log_shift)
    add = logsumexp(alpha * log_mix + (1 - alpha) * log_p) / (alpha - 1)
    remove = logsumexp(alpha * log_p + (1 - alpha) * log_mix) / (alpha - 1)
    return max(add, remove)


@pytest.mark.parametrize("mu,q", [(2.0, 0.1), (8.0, 0.05), (20.0, 0.3)])
def test_bound_covers_the_exact_subsampled_skellam_both_directions(mu, q):
    orders = np.arange(2, 17, dtype=float)
    bound = poisson_subsampled_rdp(lambda a: skellam_rdp(mu, 1.0, 1.0, a), q, orders)
    exact = np.array([exact_subsampled_skellam_rdp(mu, q, int(a)) for a in orders])
    assert np.all(bound >= exact)


def opacus_epsilon(sigma: float, q: float, steps: int) -> float:
    accountant = OpacusRDP()
    accountant.history = [(sigma, q, steps)]
    return accountant.get_epsilon(delta=DELTA)


def teacher_like(sigma: float, q: float, steps: int, l2: float = 1024.5, dim: int = 328):
    """A DP-SGD event on the grid whose noise std is sigma times the L2 sensitivity."""
    l1 = l2 * min(np.sqrt(dim), l2)
    return skellam_dpsgd_event((sigma * l2) ** 2 / 2, l1, l2, q, steps)


@pytest.mark.parametrize("sigma,steps", [(1.0, 30), (5.0, 100), (20.0, 30)])
def test_full_batch_skellam_dpsgd_matches_opacus_gaussian_from_above(sigma, steps):
    ours = RdpAccountant().compose(teacher_like(sigma, 1.0, steps)).get_epsilon(DELTA)
    theirs = opacus_epsilon(sigma, 1.0, steps)
    print(f"\nsigma {sigma}, {steps} full-batch steps: Skellam {ours:.5f} vs Opacus Gaussian {theirs:.5f}")
    assert theirs <= ours <= theirs * 1.01


@pytest.mark.parametrize("sigma,q,steps", [(1.5, 0.04, 2250), (4.0, 0.05, 100)])
def test_subsampled_skellam_dpsgd_is_never_below_opacus(sigma, q, steps):
    ours = RdpAccountant().compose(teacher_like(sigma, q, steps)).get_epsilon(DELTA)
    theirs = opacus_epsilon(sigma, q, steps)
    print(f"\nsigma {sigma}, q {q}, {steps} steps: Skellam (general bound) {ours:.4f} vs Opacus {theirs:.4f}")
    assert ours >= theirs


def test_full_batch_event_is_the_plain_skellam_mechanism():
    assert skellam_dpsgd_event(1e6, 30.0, 5.0, 1.0, 3) == skellam_event(1e6, 30.0, 5.0, count=3)


def test_dpsgd_event_composes_in_rdp_only_and_says_why_pld_dropped():
    eps = CombinedAccountant().compose(teacher_like(3.0, 0.1, 10)).epsilon(DELTA)
    assert eps.method == "rdp" and eps.pld is None and "PLD unsupported" in eps.reason
