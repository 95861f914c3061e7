"""The combined accountant against published and independently computed values."""

import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import pld as dpa_pld
from dp_accounting import rdp as dpa_rdp
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from opacus.accountants import RDPAccountant as OpacusRDP

from fedsynth.common.accounting import (
    DEFAULT_ORDERS,
    OPACUS_ORDERS,
    CombinedAccountant,
    RdpAccountant,
    dpsgd_event,
    exponential_event,
    gaussian_event,
    gaussian_rho,
    laplace_event,
)

DELTA = 1e-5
# The notes' benchmark (shared/notes/flower-secaggplus.md, "Accounting").
NOTES_EVENTS = {
    "a": dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(256 / 30000, dpa.GaussianDpEvent(1.0)), 1000),
    "b": dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(20.0), 30),
    "c": dpa.LaplaceDpEvent(1.0),
}
NOTES_RDP = {"a": 1.8121, "b": 1.1182, "c": 1.0028, "composed": 3.0328}
NOTES_PLD = {"a": 1.5397, "b": 1.0238, "c": 1.0000, "composed": 2.7986}


def _notes_event(name):
    return dpa.ComposedDpEvent(list(NOTES_EVENTS.values())) if name == "composed" else NOTES_EVENTS[name]


def test_opacus_golden_dpsgd():
    """Opacus' published RDP value: sigma 1.5, q 0.04, 90 epochs = 2250 steps, delta 1e-5."""
    golden, steps = 7.32911117143, int(90 / 0.04)
    opacus = OpacusRDP()
    opacus.history = [(1.5, 0.04, steps)]
    live = opacus.get_epsilon(delta=DELTA)
    ours = CombinedAccountant(orders=OPACUS_ORDERS).compose(dpsgd_event(1.5, 0.04, steps)).epsilon(DELTA)
    print(f"\nOpacus golden {golden}, Opacus live {live:.11f}, ours RDP {ours.rdp:.11f}, ours min {ours.epsilon:.6f}")
    assert live == pytest.approx(golden, abs=1e-6)
    # dp-accounting 0.6 adds |binom(alpha, i)| terms at fractional orders (its _log_comb drops
    # the sign), a slightly larger upper bound than Opacus' signed series: never below Opacus.
    assert golden <= ours.rdp <= golden + 3e-4
    assert ours.epsilon <= ours.rdp


def test_rdp_equals_opacus_at_integer_orders():
    integer_orders = [a for a in OPACUS_ORDERS if float(a).is_integer()]
    for sigma, q, steps in [(1.5, 0.04, 2250), (1.0, 256 / 30000, 1000), (0.8, 0.1, 50)]:
        opacus = OpacusRDP()
        opacus.history = [(sigma, q, steps)]
        live, _ = opacus.get_privacy_spent(delta=DELTA, alphas=integer_orders)
        ours = CombinedAccountant(orders=integer_orders).compose(dpsgd_event(sigma, q, steps)).epsilon(DELTA)
        assert ours.rdp == pytest.approx(live, rel=1e-9)


@pytest.mark.parametrize("name", ["a", "b", "c", "composed"])
def test_notes_golden_values(name):
    event = _notes_event(name)
    rdp = CombinedAccountant().compose(event).epsilon(DELTA).rdp
    pld = CombinedAccountant(value_discretization_interval=1e-4).compose(event).epsilon(DELTA).pld
    print(f"\nnotes ({name}): RDP {rdp:.4f} (notes {NOTES_RDP[name]}), PLD {pld:.4f} (notes {NOTES_PLD[name]})")
    assert rdp == pytest.approx(NOTES_RDP[name], abs=5e-5)
    assert pld == pytest.approx(NOTES_PLD[name], abs=5e-5)
    direct_rdp = dpa_rdp.RdpAccountant(DEFAULT_ORDERS).compose(event).get_epsilon(DELTA)
    assert rdp == pytest.approx(direct_rdp, rel=1e-12)


@pytest.mark.parametrize("name", ["a", "b", "c", "composed"])
def test_pld_equals_dp_accounting_direct_at_default_interval(name):
    event = _notes_event(name)
    ours = CombinedAccountant().compose(event).epsilon(DELTA).pld
    direct = dpa_pld.PLDAccountant(value_discretization_interval=1e-3).compose(event).get_epsilon(DELTA)
    assert ours == pytest.approx(direct, rel=1e-12)


def test_notes_composed_at_default_interval_and_opacus_on_a():
    result = CombinedAccountant().compose(_notes_event("composed")).epsilon(DELTA)
    opacus = OpacusRDP()
    opacus.history = [(1.0, 256 / 30000, 1000)]
    print(f"\ncomposed at default interval: {result}; Opacus RDP on (a): {opacus.get_epsilon(delta=DELTA):.4f}")
    assert (result.epsilon, result.method) == (pytest.approx(2.7993, abs=5e-5), "pld")
    assert opacus.get_epsilon(delta=DELTA) == pytest.approx(NOTES_RDP["a"], abs=5e-5)


def test_orders_include_opacus_and_dp_accounting_defaults():
    assert set(OPACUS_ORDERS) <= set(DEFAULT_ORDERS)
    assert set(dpa_rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS) <= set(DEFAULT_ORDERS)
    assert list(DEFAULT_ORDERS) == sorted(DEFAULT_ORDERS)


@pytest.mark.parametrize("sigma, sensitivity", [(1.0, 1.0), (3.0, 2.0), (0.7, 0.25)])
def test_gaussian_zcdp_curve_matches_dp_accounting(sigma, sensitivity):
    rho = gaussian_rho(sigma, sensitivity)
    assert rho == pytest.approx(sensitivity**2 / (2 * sigma**2), rel=1e-15)
    as_gaussian = RdpAccountant().compose(gaussian_event(sigma, sensitivity)).rdp
    as_zcdp = RdpAccountant().compose(dpa.ZCDpEvent(rho)).rdp
    orders = np.array(DEFAULT_ORDERS)
    np.testing.assert_allclose(as_gaussian, orders * rho, rtol=1e-12)
    np.testing.assert_allclose(as_zcdp, as_gaussian, rtol=1e-12)
    for alpha in (1.5, 2, 8, 32):
        assert as_gaussian[list(DEFAULT_ORDERS).index(alpha)] == pytest.approx(alpha * rho, rel=1e-12)


def test_composition_equals_dp_accountings_own():
    events = [dpsgd_event(1.1, 0.02, 400)]
    events += [gaussian_event(sigma, count=3) for sigma in (8.0, 12.0, 15.0, 30.0)]
    events += [laplace_event(4.0)]
    ours = CombinedAccountant()
    for event in events:
        ours.compose(event)
    result = ours.epsilon(1e-6)
    composed = dpa.ComposedDpEvent(events)
    direct_rdp = dpa_rdp.RdpAccountant(DEFAULT_ORDERS).compose(composed).get_epsilon(1e-6)
    direct_pld = dpa_pld.PLDAccountant(value_discretization_interval=1e-3).compose(composed).get_epsilon(1e-6)
    assert result.rdp == pytest.approx(direct_rdp, rel=1e-12)
    assert result.pld == pytest.approx(direct_pld, rel=1e-6)
    assert result.epsilon == min(result.rdp, result.pld)
    assert result.method == ("pld" if result.pld < result.rdp else "rdp")
    assert ours.delta_for(result.epsilon) <= 1e-6 * (1 + 1e-3)


def test_exponential_mechanism_is_bounded_range_in_rdp_and_pure_in_pld():
    epsilon, count = 0.4, 12
    accountant = CombinedAccountant().compose(exponential_event(epsilon, count))
    rdp = RdpAccountant().compose(exponential_event(epsilon, count)).rdp
    np.testing.assert_allclose(rdp, count * np.array(DEFAULT_ORDERS) * epsilon**2 / 8, rtol=1e-12)
    pure = pld_lib.from_privacy_parameters(pld_common.DifferentialPrivacyParameters(epsilon, 0.0), 1e-3)
    result = accountant.epsilon(DELTA)
    assert result.pld == pytest.approx(pure.self_compose(count).get_epsilon_for_delta(DELTA), rel=1e-9)
    assert result.pld <= count * epsilon
    assert result.rdp == pytest.approx(
        dpa_rdp.RdpAccountant(DEFAULT_ORDERS).compose(dpa.ZCDpEvent(count * epsilon**2 / 8)).get_epsilon(DELTA)
    )


def test_event_supported_by_one_accountant_only_reports_the_other_with_reason():
    event = dpa.PoissonSampledDpEvent(0.1, dpa.LaplaceDpEvent(2.0))  # PLD only in dp-accounting 0.6
    result = CombinedAccountant().compose(event).compose(gaussian_event(5.0)).epsilon(DELTA)
    assert result.rdp is None and result.method == "pld"
    assert "RDP unsupported" in result.reason


def test_event_supported_by_no_accountant_raises_and_leaves_state():
    accountant = CombinedAccountant().compose(gaussian_event(5.0))
    before = accountant.epsilon(DELTA)
    with pytest.raises(dpa.UnsupportedEventError):
        accountant.compose(dpa.UnsupportedDpEvent())
    assert accountant.epsilon(DELTA) == before


def test_copy_is_independent():
    accountant = CombinedAccountant().compose(gaussian_event(5.0))
    before = accountant.epsilon(DELTA)
    accountant.copy().compose(gaussian_event(1.0))
    assert accountant.epsilon(DELTA) == before


def test_empty_and_non_private():
    assert CombinedAccountant().epsilon(DELTA).epsilon == 0
    assert math.isinf(CombinedAccountant().compose(dpa.NonPrivateDpEvent()).epsilon(DELTA).epsilon)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, float("nan")])
def test_bad_delta_raises(delta):
    with pytest.raises(ValueError):
        CombinedAccountant().epsilon(delta)


def test_pld_composed_one_event_at_a_time_equals_composing_each_at_once():
    from fedsynth.common.accounting import SkellamDpEvent
    from fedsynth.common.accounting.accountant import PldAccountant

    events = [SkellamDpEvent(mu=4000.0 * (k + 1), l1_sensitivity=1, l2_sensitivity=1) for k in range(3)]
    events += [exponential_event(0.05), dpa.GaussianDpEvent(30.0)]
    ours, eager = CombinedAccountant(), PldAccountant()
    for event in events:
        ours.compose(event, 2)
        eager.compose(event, 2)
    trial = ours.copy().compose(dpa.LaplaceDpEvent(20.0))  # a copy composes what waited once, then its own
    assert ours.epsilon(1e-6).pld == eager.get_epsilon(1e-6)
    assert ours.delta_for(1.0) == min(eager.get_delta(1.0), RdpAccountant().compose(
        dpa.ComposedDpEvent([dpa.SelfComposedDpEvent(e, 2) for e in events])).get_delta(1.0))
    assert trial.epsilon(1e-6).pld == eager.compose(dpa.LaplaceDpEvent(20.0)).get_epsilon(1e-6)


def test_pld_work_is_skipped_once_an_event_pld_cannot_handle_arrives(monkeypatch):
    from fedsynth.common.accounting import SkellamDpEvent, accountant

    def refuse(*args, **kwargs):
        raise AssertionError("a PLD was built although the composition's PLD answers nothing")

    monkeypatch.setattr(accountant, "skellam_pld", refuse)
    ours = CombinedAccountant()
    for k in range(5):  # counting rounds (PLD-able) ...
        ours.compose(SkellamDpEvent(mu=5000.0 + k, l1_sensitivity=1, l2_sensitivity=1))
    ours.compose(SkellamDpEvent(mu=2e6, l1_sensitivity=108.0, l2_sensitivity=31.2))  # ... then a gradient round
    result = ours.epsilon(1e-6)
    assert result.method == "rdp" and result.pld is None and "PLD unsupported" in result.reason


def test_an_oversized_skellam_parameter_is_accounted_by_rdp_without_building_its_pld(monkeypatch):
    from fedsynth.common.accounting import SkellamDpEvent, accountant

    def refuse(*args, **kwargs):
        raise AssertionError("a PLD was built for a Skellam parameter above the public bound")

    monkeypatch.setattr(accountant, "skellam_pld", refuse)
    result = CombinedAccountant().compose(SkellamDpEvent(mu=1e12, l1_sensitivity=1, l2_sensitivity=1)).epsilon(1e-6)
    assert result.method == "rdp" and result.pld is None and "mu <= 1e+06" in result.reason
    assert result.epsilon < 1e-3  # a huge noise: tiny epsilon, from RDP's closed form
