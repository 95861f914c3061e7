"""The Skellam mechanism: RDP bound, exact PLD, and the noise model it assumes."""

import math

import numpy as np
import pytest
from scipy import stats

from fedsynth.common.accounting import DEFAULT_ORDERS, CombinedAccountant, RdpAccountant, gaussian_event, skellam_event
from fedsynth.common.accounting.skellam import skellam_pld

DELTA = 1e-5
INTEGER_ORDERS = [a for a in DEFAULT_ORDERS if float(a).is_integer()]


def paper_bound(alpha, mu, d1, d2):
    """Agarwal, Kairouz & Liu (2021), written with the paper's variance mu_p = 2 mu."""
    mu_p = 2 * mu
    surcharge = min(((2 * alpha - 1) * d2**2 + 6 * d1) / (4 * mu_p**2), 3 * d1 / (2 * mu_p))
    return alpha * d2**2 / (2 * mu_p) + surcharge


@pytest.mark.parametrize("mu, d1, d2, count", [(0.5, 1, 1, 1), (20.0, 4, 2, 3), (1e4, 9, 3, 1), (3.0, 25, 5, 2)])
def test_rdp_matches_the_paper_bound(mu, d1, d2, count):
    rdp = dict(zip(DEFAULT_ORDERS, RdpAccountant().compose(skellam_event(mu, d1, d2, count)).rdp))
    for alpha in INTEGER_ORDERS:
        assert rdp[alpha] == pytest.approx(count * paper_bound(alpha, mu, d1, d2), rel=1e-12)
    for alpha in (1.1, 2.5, 10.9):  # fractional orders take the bound at ceil(alpha)
        assert rdp[alpha] == pytest.approx(count * paper_bound(math.ceil(alpha), mu, d1, d2), rel=1e-12)


def test_rdp_tends_to_gaussian_with_the_same_variance():
    ratios = []
    for mu in (10.0, 100.0, 1e3, 1e4, 1e5):
        skellam = RdpAccountant(INTEGER_ORDERS).compose(skellam_event(mu, 1, 1)).rdp
        gaussian = RdpAccountant(INTEGER_ORDERS).compose(gaussian_event(math.sqrt(2 * mu))).rdp
        ratios.append(float(np.max(skellam / gaussian)))
    assert all(r >= 1 for r in ratios)
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[-1] < 1 + 1e-3


@pytest.mark.parametrize("mu, count", [(0.5, 1), (3.0, 4), (50.0, 10), (2000.0, 1)])
def test_pld_is_no_worse_than_rdp(mu, count):
    result = CombinedAccountant().compose(skellam_event(mu, 1, 1, count)).epsilon(DELTA)
    assert result.pld <= result.rdp
    assert result.epsilon == result.pld


@pytest.mark.parametrize("mu", [100.0, 1e3, 1e4])
def test_pld_close_to_gaussian_with_the_same_variance(mu):
    def pld_epsilon(event):
        return CombinedAccountant(value_discretization_interval=1e-4).compose(event).epsilon(DELTA).pld

    skellam, gaussian = pld_epsilon(skellam_event(mu, 1, 1)), pld_epsilon(gaussian_event(math.sqrt(2 * mu)))
    assert skellam == pytest.approx(gaussian, rel=1e-2)


@pytest.mark.parametrize("mu", [0.5, 3.0, 40.0])
def test_pld_delta_equals_hockey_stick_divergence(mu):
    """delta(eps) = sum_k [P(k) - e^eps P(k - 1)]_+ in both directions, from the pmf itself."""
    support = np.arange(-400, 401)
    p, q = stats.skellam.pmf(support, mu, mu), stats.skellam.pmf(support - 1, mu, mu)
    pld = skellam_pld(mu, value_discretization_interval=1e-4)
    for eps in (0.0, 0.3, 1.0, 2.0):
        exact = max(np.maximum(p - math.exp(eps) * q, 0).sum(), np.maximum(q - math.exp(eps) * p, 0).sum())
        assert exact <= pld.get_delta_for_epsilon(eps) <= exact * 1.01 + 1e-18


def test_pld_unsupported_for_other_sensitivities_rdp_reported():
    result = CombinedAccountant().compose(skellam_event(30.0, 2, 2)).epsilon(DELTA)
    assert result.pld is None and result.method == "rdp"
    assert "Skellam" in result.reason and result.epsilon == result.rdp


def _chi_square_pvalue(draws, mu):
    values, counts = np.unique(draws, return_counts=True)
    expected = len(draws) * stats.skellam.pmf(values, mu, mu)
    keep = expected >= 5
    rest = len(draws) - counts[keep].sum(), len(draws) - expected[keep].sum()
    observed = np.append(counts[keep], rest[0])
    expected = np.append(expected[keep], rest[1])
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize("mu", [0.7, 12.0, 400.0])
def test_poisson_difference_sampler_is_the_accounted_skellam(mu):
    rng = np.random.default_rng(20261123)
    n = 200_000
    draws = rng.poisson(mu, n) - rng.poisson(mu, n)
    standard_error = math.sqrt(2 * mu / n)
    assert abs(draws.mean()) < 5 * standard_error
    assert draws.var() == pytest.approx(2 * mu, rel=0.02)  # about 5 standard errors
    assert _chi_square_pvalue(draws, mu) > 1e-4


def test_sum_of_client_shares_is_skellam_of_the_summed_mu():
    rng = np.random.default_rng(7)
    shares = [0.4, 1.3, 2.5, 0.8]  # what four surviving clients added
    n = 200_000
    total = sum(rng.poisson(m, n) - rng.poisson(m, n) for m in shares)
    assert _chi_square_pvalue(total, sum(shares)) > 1e-4
    assert _chi_square_pvalue(total, sum(shares) * 1.1) < 1e-6  # the test can tell 10 % apart
