"""The secure noisy sum's pure parts: ranges, client encoding, decoding, noise statistics."""

import numpy as np
import pytest
from noise_checks import matches_skellam

from fedsynth.common.noise import (
    TAIL_PROBABILITY,
    _chernoff_exponent,
    sample_skellam,
    skellam_mu_for_sigma,
    skellam_tail_bound,
)
from fedsynth.common.secure_sum import (
    ContributionError,
    NoisySumSpec,
    SecureRangeError,
    decode_sum,
    noisy_share,
    secure_ranges,
    to_integer_grid,
)


def spec(**kw):
    base = dict(dim=4, mu=skellam_mu_for_sigma(10.0), min_survivors=3, max_abs=50_000)
    return NoisySumSpec(**{**base, **kw})


def test_ranges_fit_counts_in_the_tens_of_thousands_for_fifty_clients():
    s = spec()
    r = secure_ranges(s, 50)
    assert r.clipping_range == 50_000 + skellam_tail_bound(s.mu_share)
    assert r.quantization_range == 2 * r.clipping_range  # step exactly 1
    assert r.modulus_range > 50 * r.quantization_range  # no wrap-around
    assert r.modulus_range & (r.modulus_range - 1) == 0


def test_ranges_refuse_values_beyond_31_bits_with_a_clear_message():
    with pytest.raises(SecureRangeError, match="31-bit quantization"):
        secure_ranges(spec(max_abs=2**31), 5)


def test_ranges_refuse_fewer_clients_than_survivors():
    with pytest.raises(SecureRangeError, match="minimum of 3 survivors"):
        secure_ranges(spec(), 2)


def test_spec_round_trips_through_flower_config():
    s = spec(scale=256.0, l1_sensitivity=3.0, l2_sensitivity=2.0)
    assert NoisySumSpec.from_config(s.to_config()) == s


def test_noisy_share_projects_a_vector_over_the_public_bound_and_never_fails_on_it():
    s = spec(max_abs=10, mu=0.0)
    share = noisy_share(np.array([1, -2_000, 11, 0]), s, secure_ranges(s, 5), np.random.default_rng(0))
    np.testing.assert_array_equal(share, [1, -10, 10, 0])


def test_noisy_share_refuses_wrong_length_naming_only_the_public_dimension():
    s = spec()
    with pytest.raises(ContributionError, match=r"^the vector does not have the round's dimension 4$"):
        noisy_share(np.array([1, 2, 3]), s, secure_ranges(s, 5), np.random.default_rng(0))


@pytest.mark.parametrize("mu", [1e-4, 0.01, 1.0, 10.0, 200.0, 1e4, 1e8])
def test_the_tail_bound_is_the_least_with_the_stated_probability(mu):
    b = skellam_tail_bound(mu)
    target = np.log(2.0 / TAIL_PROBABILITY)
    assert _chernoff_exponent(mu, b + 1) >= target  # P(|Sk| > b) <= TAIL_PROBABILITY
    assert b == 0 or _chernoff_exponent(mu, b) < target  # and b - 1 would not do


def test_the_chernoff_bound_holds_where_it_can_be_computed_exactly():
    mu, b = 0.5, skellam_tail_bound(0.5)
    from scipy.stats import skellam

    assert 2 * skellam.sf(b, mu, mu) <= TAIL_PROBABILITY


def test_noise_free_share_is_the_vector_itself():
    s = spec(mu=0.0)
    x = np.array([0, 7, 49_999, 3])
    np.testing.assert_array_equal(noisy_share(x, s, secure_ranges(s, 5), np.random.default_rng(0)), x)


def test_randomized_rounding_is_unbiased_and_exact_on_integers():
    rng = np.random.default_rng(1)
    x = np.full(200_000, 0.3)
    v = to_integer_grid(x, 1.0, rng)
    assert set(np.unique(v)) == {0, 1}
    assert abs(v.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / x.size)
    np.testing.assert_array_equal(to_integer_grid(np.arange(5), 1.0, rng), np.arange(5))


def test_decode_recovers_the_exact_sum_from_the_survivors_mean():
    total = np.array([123456, -7, 0, 99])
    np.testing.assert_array_equal(decode_sum(total / 7, 7, spec()), total)


def test_decode_rejects_results_off_the_integer_grid():
    with pytest.raises(ArithmeticError):
        decode_sum(np.array([0.5]), 1, spec(dim=1))


def _noise_of_survivors(mu_share: float, survivors: int, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return sum(sample_skellam(rng, mu_share, draws) for _ in range(survivors))


def test_sum_of_survivor_shares_has_the_planned_distribution():
    s = spec(mu=skellam_mu_for_sigma(6.0), min_survivors=3)
    for survivors in (3, 4, 5):
        noise = _noise_of_survivors(s.mu_share, survivors, 20_000, seed=survivors)
        assert matches_skellam(noise, s.mu_of_survivors(survivors)), survivors


def test_noise_check_rejects_half_the_planned_variance():
    """Power meta-test: the same check must fail when clients add half the noise."""
    s = spec(mu=skellam_mu_for_sigma(6.0), min_survivors=3)
    weak = _noise_of_survivors(s.mu_share / 2, 3, 20_000, seed=3)
    assert not matches_skellam(weak, s.mu_of_survivors(3))
