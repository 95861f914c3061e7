"""DpEvent constructors and their JSON form."""

import json

import dp_accounting as dpa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsynth.common.accounting import (
    ExponentialMechanismDpEvent,
    SkellamDpEvent,
    dpsgd_event,
    event_from_dict,
    event_to_dict,
    exponential_event,
    gaussian_event,
    gaussian_rho,
    laplace_event,
    skellam_event,
)


def test_gaussian_event_scales_by_sensitivity_and_repeats():
    assert gaussian_event(2.0, l2_sensitivity=0.5) == dpa.GaussianDpEvent(4.0)
    assert gaussian_event(3.0, count=7) == dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(3.0), 7)


def test_dpsgd_event_is_self_composed_poisson_sampled_gaussian():
    expected = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.1)), 500)
    assert dpsgd_event(1.1, 0.01, 500) == expected


def test_laplace_exponential_skellam_events():
    assert laplace_event(4.0, l1_sensitivity=2.0) == dpa.LaplaceDpEvent(2.0)
    assert exponential_event(0.3, count=2) == dpa.SelfComposedDpEvent(ExponentialMechanismDpEvent(0.3), 2)
    assert skellam_event(50.0, 3, 2) == SkellamDpEvent(50.0, 3, 2)


def test_gaussian_rho():
    assert gaussian_rho(2.0, 3.0) == pytest.approx(9 / 8)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gaussian_event(0.0),
        lambda: gaussian_event(1.0, l2_sensitivity=-1.0),
        lambda: gaussian_event(1.0, count=0),
        lambda: dpsgd_event(1.0, 1.5, 10),
        lambda: dpsgd_event(1.0, 0.1, 2.5),
        lambda: laplace_event(float("nan")),
        lambda: exponential_event(-0.1),
        lambda: skellam_event(0.0, 1, 1),
        lambda: skellam_event(10.0, 1, float("inf")),
    ],
)
def test_constructors_reject_bad_parameters(make):
    with pytest.raises(ValueError):
        make()


NESTED = dpa.ComposedDpEvent(
    [
        dpsgd_event(1.0, 256 / 30000, 1000),
        gaussian_event(20.0, count=30),
        laplace_event(1.0),
        exponential_event(0.5, count=3),
        skellam_event(100.0, 1, 1, count=5),
        dpa.SelfComposedDpEvent(dpa.ComposedDpEvent([skellam_event(7.5, 4, 2), dpa.NoOpDpEvent()]), 2),
    ]
)


def test_json_round_trip_of_nested_events():
    text = json.dumps(event_to_dict(NESTED))
    assert event_from_dict(json.loads(text)) == NESTED


def leaf_events():
    positive = st.floats(0.01, 1e4, allow_nan=False)
    return st.one_of(
        st.builds(dpa.GaussianDpEvent, positive),
        st.builds(dpa.LaplaceDpEvent, positive),
        st.builds(ExponentialMechanismDpEvent, positive),
        st.builds(SkellamDpEvent, positive, st.integers(1, 9), positive),
        st.builds(dpsgd_event, positive, st.floats(1e-4, 1.0), st.integers(1, 10**6)),
    )


EVENTS = st.recursive(
    leaf_events(),
    lambda inner: st.one_of(
        st.builds(dpa.SelfComposedDpEvent, inner, st.integers(1, 1000)),
        st.builds(dpa.ComposedDpEvent, st.lists(inner, max_size=4)),
        st.builds(dpa.PoissonSampledDpEvent, st.floats(0.0, 1.0), inner),
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(EVENTS)
def test_json_round_trip_property(event):
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


@pytest.mark.parametrize(
    "data",
    [
        {"module_name": "os", "class_name": "system"},
        {"module_name": "dp_accounting.dp_event", "class_name": "NoSuchDpEvent"},
        {"module_name": "dp_accounting.dp_event", "class_name": "NamedTuple"},
        {"class_name": "GaussianDpEvent", "noise_multiplier": 1.0},
        {"module_name": "dp_accounting.dp_event", "class_name": "GaussianDpEvent", "sigma": 1.0},
        {"module_name": "fedsynth.common.accounting.events", "class_name": "SkellamDpEvent",
         "mu": -1.0, "l1_sensitivity": 1, "l2_sensitivity": 1},
    ],
)
def test_event_from_dict_rejects_unknown_or_malformed(data):
    with pytest.raises(ValueError):
        event_from_dict(data)
