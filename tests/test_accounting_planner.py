"""Budget planning: never over the target, close to it, and consistent with Opacus."""

import math

import dp_accounting as dpa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant as OpacusRDP
from opacus.accountants.utils import get_noise_multiplier

from fedsynth.common.accounting import (
    BudgetError,
    RdpAccountant,
    dpsgd_event,
    exponential_event,
    gaussian_event,
    noise_for_epsilon,
    plan_noise,
)


def marginals(k):
    return lambda z: gaussian_event(z, count=k)


def dpsgd(q, steps):
    return lambda z: dpsgd_event(z, q, steps)


def selection(k):
    return lambda z: exponential_event(1.0 / z, count=k)


STRUCTURES = {
    "marginals": lambda: {"measure": marginals(30)},
    "select+measure": lambda: {"select": selection(10), "measure": marginals(10)},
    "dpsgd+marginals": lambda: {"label": dpsgd(0.01, 500), "measure": marginals(20)},
    "all": lambda: {"label": dpsgd(0.02, 300), "select": selection(8), "measure": marginals(8)},
}


def rdp_epsilon(event, delta):
    """dp-accounting's RDP accountant, extended only for the exponential mechanism."""
    return RdpAccountant().compose(event).get_epsilon(delta)


def composed(phases, noise):
    return dpa.ComposedDpEvent([phases[name](z) for name, z in noise.items()])


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    epsilon=st.floats(0.1, 20.0),
    log10_delta=st.floats(-9.0, -4.0),
    structure=st.sampled_from(sorted(STRUCTURES)),
    shares=st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3),
)
def test_plan_meets_target_and_is_close(epsilon, log10_delta, structure, shares):
    delta = 10**log10_delta
    phases = STRUCTURES[structure]()
    split = dict(zip(sorted(phases), shares))
    plan = plan_noise(phases, split, epsilon, delta)
    assert plan.epsilon.epsilon <= epsilon
    independent = rdp_epsilon(composed(phases, plan.noise_multipliers), delta)
    assert 0.97 * epsilon <= independent <= epsilon
    assert plan.epsilon.rdp == pytest.approx(independent, rel=1e-12)
    for name, z in plan.noise_multipliers.items():
        assert plan.phase_epsilons[name] == pytest.approx(rdp_epsilon(phases[name](z), delta), rel=1e-12)


def test_plan_with_combined_method_is_close_under_pld():
    phases = STRUCTURES["marginals"]()
    plan = plan_noise(phases, {"measure": 1.0}, 3.0, 1e-6, method="combined")
    rdp_plan = plan_noise(phases, {"measure": 1.0}, 3.0, 1e-6)
    assert plan.epsilon.method == "pld" and 0.97 * 3.0 <= plan.epsilon.epsilon <= 3.0
    assert plan.noise_multipliers["measure"] < 0.97 * rdp_plan.noise_multipliers["measure"]


def test_shares_are_respected():
    phases = {"one": marginals(10), "two": marginals(10)}
    plan = plan_noise(phases, {"one": 3.0, "two": 1.0}, 2.0, 1e-6)
    ratio = plan.phase_epsilons["one"] / plan.phase_epsilons["two"]
    assert ratio == pytest.approx(3.0, rel=5e-3)


@pytest.mark.parametrize("epsilon, q, steps", [(8.0, 0.04, 2250), (1.0, 256 / 30000, 1000), (3.0, 0.01, 5000)])
def test_noise_for_epsilon_against_opacus(epsilon, q, steps):
    delta, rtol = 1e-5, 1e-3
    ours = noise_for_epsilon(dpsgd(q, steps), epsilon, delta, rtol=rtol)
    theirs = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps)
    print(f"\nnoise for eps {epsilon}, q {q:.4g}, {steps} steps: ours {ours:.5f}, Opacus {theirs:.5f}")
    assert ours <= theirs * (1 + rtol)
    opacus = OpacusRDP()
    opacus.history = [(ours, q, steps)]
    ours_epsilon = rdp_epsilon(dpsgd_event(ours, q, steps), delta)
    assert opacus.get_epsilon(delta=delta) <= ours_epsilon * (1 + 1e-12) and ours_epsilon <= epsilon
    assert rdp_epsilon(dpsgd_event(ours / (1 + rtol), q, steps), delta) > epsilon  # smallest, rounded up


@pytest.mark.parametrize(
    "epsilon, delta", [(0.0, 1e-5), (-1.0, 1e-5), (math.inf, 1e-5), (math.nan, 1e-5), (1.0, 0.0), (1.0, 1.0)]
)
def test_invalid_targets_raise_budget_error(epsilon, delta):
    with pytest.raises(BudgetError):
        plan_noise({"m": marginals(1)}, {"m": 1.0}, epsilon, delta)
    with pytest.raises(BudgetError):
        noise_for_epsilon(marginals(1), epsilon, delta)


@pytest.mark.parametrize("split", [{"m": 1.0, "x": 1.0}, {}, {"m": 0.0}, {"m": math.nan}])
def test_bad_split_raises_budget_error(split):
    with pytest.raises(BudgetError):
        plan_noise({"m": marginals(1)}, split, 1.0, 1e-6)


def test_unreachable_target_raises_budget_error_naming_the_phase():
    with pytest.raises(BudgetError, match="'measure'.*above 10"):
        plan_noise({"measure": marginals(100)}, {"measure": 1.0}, 0.01, 1e-9, max_noise=10.0)


def test_pure_dp_phase_reaches_its_floor():
    """A cost that stops falling at the minimum noise: the plan takes it and stays under."""
    phases = {"fixed": lambda z: exponential_event(0.1)}
    plan = plan_noise(phases, {"fixed": 1.0}, 5.0, 1e-6)
    assert plan.epsilon.epsilon <= 5.0
    assert RdpAccountant().compose(exponential_event(0.1)).get_epsilon(1e-6) == plan.phase_epsilons["fixed"]
