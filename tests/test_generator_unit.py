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
    VIEW_BITS,
    candidate_cliques,
    layout,
    local_errors,
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
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60), scale=st.sampled_from([1e-300, 1.0, 1e6, 2.0**53]))
def test_local_error_sensitivity_is_two_rows_exactly_for_any_view(seed, rows, scale):
    """Adding one record changes every candidate's error by at most SCORE_SENSITIVITY rows,
    exactly (integers in units of 2**-VIEW_BITS rows), whatever the view's magnitude."""
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, rows)
    extra = random_codes(rng, 1)
    cands = candidate_cliques(DOMAIN, 3, 100)
    model = [rng.random(int(np.prod([DOMAIN[c] for c in cl]))) * scale + 1e-300 for cl in cands]

    def errors(table):
        return local_errors(split_blocks(marginals(table, COLUMNS, DOMAIN, cands), DOMAIN, cands), model)

    change = np.abs(errors(np.vstack([codes, extra])) - errors(codes))
    assert change.dtype == np.int64 and change.max() <= int(SCORE_SENSITIVITY) << VIEW_BITS


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60), given_columns=st.sampled_from([["a"], ["c", "a"], ["b"]]))
def test_local_error_given_a_column_keeps_the_sensitivity_for_any_view(seed, rows, given_columns):
    """Taken given a column (weighted by the organisation's own counts of it), the error still
    moves by at most SCORE_SENSITIVITY rows per added record, exactly, even where the view puts
    no mass on a slice."""
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, rows)
    extra = random_codes(rng, 1)
    cands = candidate_cliques(DOMAIN, 3, 100)
    model = [rng.random(int(np.prod([DOMAIN[c] for c in cl]))) * (rng.random() < 0.7) + 1e-300 * (i % 2)
             for i, cl in enumerate(cands)]
    model = [m if m.sum() > 0 else np.ones_like(m) for m in model]
    layouts = [layout(cl, DOMAIN, given_columns) for cl in cands]

    def errors(table):
        return local_errors(split_blocks(marginals(table, COLUMNS, DOMAIN, cands), DOMAIN, cands), model, layouts)

    change = np.abs(errors(np.vstack([codes, extra])) - errors(codes))
    assert change.dtype == np.int64 and change.max() <= int(SCORE_SENSITIVITY) << VIEW_BITS


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
    assert one_way.one_way_scale == 1.0  # no rounds: the 1-way round is the whole plan, at its noise
    assert len(event.events) == 1 and event.events[0].count == 15


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


def test_a_marginal_beyond_the_public_cell_cap_fails_the_same_for_an_empty_and_a_full_table():
    """A coordinator's clique of 16 copies of a 16-value column (16^16 = 2^64 cells) once wrapped
    int64 to 0 cells: an empty table answered, a table with a row failed. Now both fail alike."""
    from fedsynth.common.marginals import cells, marginal

    domain = {"a": 16}
    clique = ("a",) * 16
    assert cells(domain, clique) == 2**64
    for codes in (np.zeros((0, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.int64)):
        with pytest.raises(ValueError, match="more than 16777216 cells"):
            marginal(codes, ["a"], domain, clique)


def test_a_marginal_of_no_column_fails_the_same_for_an_empty_and_a_full_table():
    """A coordinator's empty clique was counted as [0] on an empty table and failed on a table
    with rows; a failed vote is answered uniformly, so the two told themselves apart."""
    from fedsynth.common.marginals import marginal

    for codes in (np.zeros((0, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.int64)):
        with pytest.raises(ValueError, match="at least one column"):
            marginal(codes, ["a"], {"a": 16}, ())


def fitted_chain_model() -> MarginalModel:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 3, 5_000)
    b = (a + (rng.random(a.size) < 0.3)) % 4
    codes = np.column_stack([a, b, (b + rng.integers(0, 2, a.size)) % 2])
    model = MarginalModel(DOMAIN)
    for cl in [("a", "b"), ("b", "c")]:
        model.add(Measurement(cl, marginal(codes, COLUMNS, DOMAIN, cl).astype(float), 1.0))
    model.fit(200)
    return model


def test_each_parent_configuration_gets_its_expected_counts_within_one_row():
    """Systematic draws: a configuration held by m rows gives each value floor or ceil of m p
    (independent draws miss by about sqrt(m p): tens of rows here)."""
    model = fitted_chain_model()
    rows = 10_007
    synthetic = model.sample(rows, seed=3)
    at = {c: i for i, c in enumerate(DOMAIN)}
    checked = 0
    for step in model.conditionals():
        config = (np.ravel_multi_index(tuple(synthetic[:, at[c]] for c in step.parents), step.shape)
                  if step.parents else np.zeros(rows, dtype=np.int64))
        cdf = step.cdf.reshape(-1, step.size) - np.arange(len(step.cdf) // step.size)[:, None]
        probabilities = np.diff(np.c_[np.zeros(len(cdf)), cdf], axis=1)
        for k in np.unique(config):
            held = config == k
            counts = np.bincount(synthetic[held, at[step.column]], minlength=step.size)
            assert np.all(np.abs(counts - held.sum() * probabilities[k]) < 1 + 1e-9), (step.column, k)
            checked += 1
    assert checked >= 1 + 3 + 4  # the root, then every configuration of the parents


def test_a_row_drawn_with_others_still_has_the_model_distribution():
    """Whatever the other rows of its configuration, one row's value follows the model: the
    first row of 4 drawn given configurations (1, 0, 1, 1), over 4,000 seeds, chi-square."""
    step = next(s for s in fitted_chain_model().conditionals() if s.parents)
    config = np.array([1, 0, 1, 1])
    parents = np.unravel_index(config, step.shape)
    first = [step.draw(parents, 4, np.random.default_rng(seed))[0] for seed in range(4_000)]
    cdf = step.cdf[step.size:2 * step.size] - 1.0
    expected = np.diff(np.r_[0.0, cdf]) * 4_000
    observed = np.bincount(first, minlength=step.size)
    keep = expected > 0
    assert observed[~keep].sum() == 0
    assert stats.chisquare(observed[keep], expected[keep]).pvalue > 1e-3


def test_a_clique_numpy_cannot_index_fails_the_same_for_an_empty_and_a_full_table():
    """64 copies of a one-code column: 1 cell, but more dimensions than numpy indexes. Once it
    failed only when a row was counted, so an empty table answered and a table with a row did not."""
    domain = {"one": 1}
    for codes in (np.zeros((0, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.int64)):
        with pytest.raises(ValueError):
            marginal(codes, ["one"], domain, ("one",) * 64)
