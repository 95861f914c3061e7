"""Empirical privacy auditing statistics (fedsynth.common.audit)."""

import math

import numpy as np
import pytest

from fedsynth.common.accounting import CombinedAccountant, exponential_event, gaussian_event, skellam_event
from fedsynth.common.audit import (
    audit,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_from_rates,
    epsilon_interval,
    group_event,
    sample_ceiling,
)
from fedsynth.common.noise import sample_skellam, skellam_mu_for_sigma

# Two-sided 90% exact intervals from scipy.stats.binomtest(k, n).proportion_ci(0.90, "exact"),
# computed once by hand: their ends are one-sided 95% Clopper-Pearson bounds.
GOLDEN = [
    (0, 100, 0.0, 0.02951304960715665),
    (3, 100, 0.00822582910786519, 0.0757107937498301),
    (50, 200, 0.20017324518153984, 0.30546735664919394),
    (100, 100, 0.9704869503928434, 1.0),
    (7, 30, 0.11498689556973868, 0.39394742252253023),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), GOLDEN)
def test_clopper_pearson_bounds_match_scipy_exact_intervals(k, n, low, high):
    assert clopper_pearson_lower(k, n, 0.05) == pytest.approx(low, rel=1e-9, abs=1e-12)
    assert clopper_pearson_upper(k, n, 0.05) == pytest.approx(high, rel=1e-9)


def test_clopper_pearson_refuses_impossible_counts():
    with pytest.raises(ValueError, match="successes <= trials"):
        clopper_pearson_upper(5, 4, 0.05)


def test_epsilon_from_known_rates():
    assert epsilon_from_rates(0.1, 0.2, 0.0) == pytest.approx(math.log(0.8 / 0.1))  # the larger of 0.8/0.1, 0.9/0.2
    assert epsilon_from_rates(0.05, 0.5, 1e-3) == pytest.approx(math.log((1 - 1e-3 - 0.5) / 0.05))
    assert epsilon_from_rates(0.5, 0.5, 0.0) == 0.0  # a coin flip shows nothing
    assert epsilon_from_rates(0.0, 0.3, 0.0) == math.inf


def test_epsilon_interval_on_known_counts():
    # no errors in 100 + 100 runs: FPR, FNR <= 1 - (alpha/2)^(1/100) each (CP bound at 0 successes)
    alpha = 0.05
    rate = 1 - (alpha / 2) ** (1 / 100)
    lower, upper = epsilon_interval(0, 100, 0, 100, 0.0, alpha)
    assert lower == pytest.approx(math.log((1 - rate) / rate))
    assert upper == math.inf
    # 10 false positives, 40 false negatives of 200 each, delta 1e-5
    lower, upper = epsilon_interval(10, 200, 40, 200, 1e-5, alpha)
    fpr_ub, fnr_ub = clopper_pearson_upper(10, 200, alpha / 2), clopper_pearson_upper(40, 200, alpha / 2)
    assert lower == pytest.approx(math.log((1 - 1e-5 - fnr_ub) / fpr_ub))
    assert 0 < lower < math.log((1 - 1e-5 - 0.2) / 0.05) < upper


def test_audit_keeps_the_best_threshold_and_pays_for_trying_them():
    out, into = np.arange(100) / 100.0, np.arange(100) / 100.0 + 0.7  # threshold 0.695 separates best
    one = audit(out, into, [0.695], delta=0.0)
    many = audit(out, into, [0.2, 0.695, 0.9], delta=0.0)
    assert (one.false_positives, one.false_negatives) == (30, 0)
    assert many.threshold == 0.695 and many.lower < one.lower  # the same errors, a Bonferroni price
    assert many.thresholds_tried == 3


def _skellam_scores(rng, mu, shift, runs):
    """Statistic of the plain Skellam mechanism on one count: the released value minus the count
    without the canary, for ``runs`` runs without and with a canary that moves the count by ``shift``."""
    return sample_skellam(rng, mu, runs), shift + sample_skellam(rng, mu, runs)


def _analytic_epsilon(mu, shift, delta):
    return CombinedAccountant().compose(skellam_event(mu, shift, shift)).epsilon(delta).epsilon


def test_audit_of_the_skellam_mechanism_is_positive_and_below_its_analytic_epsilon():
    # one record moves the count by 1 against noise of std 0.5: the accountant's PLD is tight here
    rng, delta, mu = np.random.default_rng(0), 1e-5, skellam_mu_for_sigma(0.5)
    out, into = _skellam_scores(rng, mu, 1, 1000)
    thresholds = np.arange(0.0, 2.01, 0.25)
    result = audit(out, into, thresholds, delta)
    claim = _analytic_epsilon(mu, 1, delta)
    assert 1.0 < result.lower < claim
    assert result.lower <= sample_ceiling(claim, delta, 1000, 1000, len(thresholds)) < claim


def test_audit_without_an_effect_shows_nothing():
    rng, delta, mu = np.random.default_rng(1), 1e-5, skellam_mu_for_sigma(2.0)
    out, into = _skellam_scores(rng, mu, 0, 500)
    assert audit(out, into, np.arange(0.0, 6.5, 0.5), delta).lower == 0.0


def test_sample_ceiling_grows_with_runs_and_stays_below_the_claim():
    low, high = sample_ceiling(2.0, 1e-6, 100, 100), sample_ceiling(2.0, 1e-6, 2000, 2000)
    assert 0 < low < high < 2.0


def test_group_event_scales_every_sensitivity():
    event = group_event(skellam_event(50.0, 1.0, 1.0, count=3), 4)
    same = skellam_event(50.0, 4.0, 4.0, count=3)
    delta = 1e-6
    assert CombinedAccountant().compose(event).epsilon(delta).epsilon == pytest.approx(
        CombinedAccountant().compose(same).epsilon(delta).epsilon
    )
    gaussian = CombinedAccountant().compose(group_event(gaussian_event(8.0), 2)).epsilon(delta).epsilon
    assert gaussian == pytest.approx(CombinedAccountant().compose(gaussian_event(4.0)).epsilon(delta).epsilon)
    pure = CombinedAccountant().compose(group_event(exponential_event(0.3), 3)).epsilon(delta).epsilon
    assert pure == pytest.approx(0.9, rel=1e-3)
