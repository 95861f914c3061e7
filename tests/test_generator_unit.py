"""The generator's pure parts: marginals, scores, selection, planning, the mbi model."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedsynth.common.accounting import CombinedAccountant, plan_noise
from fedsynth.common.generator import GeneratorSettings, MarginalModel, Measurement, generator_event
from fedsynth.common.marginals import (
    SCORE_SENSITIVITY,
    candidate_cliques,
    exponential_mechanism_top_k,
    local_scores,
    marginal,
    marginals,
    split_blocks,
)

DOMAIN = {"a": 3, "b": 4, "c": 2}
COLUMNS = list(DOMAIN)


def random_codes(rng, rows):
    return np.column_stack([rng.integers(0, k, rows) for k in DOMAIN.values()])


def test_marginal_matches_pandas_crosstab_in_c_order():
    codes = random_codes(np.random.default_rng(0), 500)
    df = pd.DataFrame(codes, columns=COLUMNS)
    expected = pd.crosstab(df.a, df.b).reindex(index=range(3), columns=range(4), fill_value=0)
    np.testing.assert_array_equal(marginal(codes, COLUMNS, DOMAIN, ("a", "b")), expected.to_numpy().ravel())


def test_marginals_concatenate_and_split_back():
    codes = random_codes(np.random.default_rng(1), 100)
    cliques = [("a",), ("b", "c"), ("a", "b", "c")]
    blocks = split_blocks(marginals(codes, COLUMNS, DOMAIN, cliques), DOMAIN, cliques)
    assert [b.size for b in blocks] == [3, 8, 24]
    assert all(b.sum() == 100 for b in blocks)


def test_candidates_respect_size_and_cell_limits():
    cands = candidate_cliques(DOMAIN, max_size=3, max_cells=12)
    assert ("a", "b") in cands and ("a", "b", "c") not in cands  # 24 cells > 12
    assert all(2 <= len(c) <= 3 for c in cands)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60))
def test_local_score_sensitivity_is_at_most_two(seed, rows):
    """Adding one record changes every candidate's score by at most SCORE_SENSITIVITY."""
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, rows)
    extra = random_codes(rng, 1)
    cands = candidate_cliques(DOMAIN, 3, 100)
    model = [rng.random(int(np.prod([DOMAIN[c] for c in cl]))) for cl in cands]
    pens = rng.random(len(cands)) * 5

    def scores(table):
        local = split_blocks(marginals(table, COLUMNS, DOMAIN, cands), DOMAIN, cands)
        return local_scores(local, model, pens)

    change = np.abs(scores(np.vstack([codes, extra])) - scores(codes))
    assert change.max() <= SCORE_SENSITIVITY + 1e-9


def test_exponential_mechanism_samples_the_softmax_distribution():
    rng = np.random.default_rng(3)
    scores = np.array([0.0, 10.0, 20.0, 25.0])
    eps, sens = 0.2, 2.0
    cands = [("a",), ("b",), ("c",), ("a", "b")]
    draws = np.array([exponential_mechanism_top_k(rng, scores, eps, sens, 1, cands)[0] for _ in range(20_000)])
    p = np.exp(eps * scores / (2 * sens))
    p /= p.sum()
    observed = np.bincount(draws, minlength=4)
    assert stats.chisquare(observed, p * draws.size).pvalue > 1e-3
    # power: the same counts are far from the distribution at twice the epsilon
    p2 = np.exp(2 * eps * scores / (2 * sens))
    assert stats.chisquare(observed, p2 / p2.sum() * draws.size).pvalue < 1e-6


def test_top_k_returns_distinct_indices_and_skips_contained_cliques():
    cands = [("a", "b"), ("a",), ("b", "c"), ("c",), ("a", "c")]
    scores = np.array([100.0, 99.0, 50.0, 49.0, 0.0])  # huge margins: the order is certain
    picks = exponential_mechanism_top_k(np.random.default_rng(0), scores, 50.0, 2.0, 3, cands)
    assert picks == [0, 2, 4]  # ("a",) lies in ("a","b"), ("c",) in ("b","c")


def test_peeling_with_exclusions_keeps_the_softmax_on_what_remains():
    """Second draw, given the first was index 0, follows the softmax over allowed indices."""
    rng = np.random.default_rng(5)
    cands = [("a", "b"), ("a",), ("c",), ("b", "c")]
    scores = np.array([9.0, 3.0, 6.0, 8.0])
    seconds = []
    for _ in range(40_000):
        picks = exponential_mechanism_top_k(rng, scores, 1.0, 0.5, 2, cands)
        if picks[0] == 0:
            seconds.append(picks[1])
    allowed = [2, 3]  # ("a",) is inside ("a","b")
    p = np.exp(scores[allowed]) / np.exp(scores[allowed]).sum()
    observed = [seconds.count(i) for i in allowed]
    assert sum(observed) == len(seconds) > 300
    assert stats.chisquare(observed, p * len(seconds)).pvalue > 1e-3


WIDE = {f"c{i}": 5 + i for i in range(15)}


@pytest.mark.parametrize("epsilon,delta", [(0.5, 1e-9), (1.0, 1e-6), (3.0, 1e-9)])
def test_generator_plan_never_overshoots(epsilon, delta):
    gs = GeneratorSettings().resolved(WIDE, epsilon, organisations=5)
    assert gs.profiled == tuple(WIDE)  # every column has at most 32 values
    plan = plan_noise({"g": lambda s: generator_event(s, 15, gs)}, {"g": 1.0}, epsilon, delta)
    sigma = plan.noise_multipliers["g"]
    spent = CombinedAccountant().compose(generator_event(sigma, 15, gs)).epsilon(delta).epsilon
    assert spent <= epsilon
    assert spent >= 0.97 * epsilon
    assert gs.epsilon_select(sigma) > 0


def test_one_way_only_plan_has_no_selection_cost():
    one_way = GeneratorSettings(rounds=0).resolved(WIDE, 1.0, organisations=1)
    event = generator_event(30.0, 15, one_way)
    assert len(event.events) == 1 and one_way.measurements(15) == 15


def test_model_recovers_a_dependency_and_samples_a_million_rows():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, 20_000)
    b = (a + (rng.random(a.size) < 0.1)) % 4  # b follows a closely
    codes = np.column_stack([a, b, rng.integers(0, 2, a.size)])
    model = MarginalModel(DOMAIN)
    for cl in [("a",), ("b",), ("c",), ("a", "b")]:
        true = marginal(codes, COLUMNS, DOMAIN, cl)
        model.add(Measurement(cl, true + rng.normal(0, 5, true.size), 5.0))
    model.fit(300)
    synthetic = model.sample(1_000_000, seed=0)
    assert synthetic.shape == (1_000_000, 3)
    assert all(synthetic[:, i].max() < k for i, k in enumerate(DOMAIN.values()))
    agree = np.mean((synthetic[:, 0] == synthetic[:, 1]))
    assert agree > 0.85  # the a-b dependency was learned, not sampled independently (0.25)
